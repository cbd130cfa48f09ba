"""On-disk signature store: chunked safetensors files, resumable after Ctrl-C or kill -9.

One folder per (model, task, method, settings) key; inside, each chunk is written to a
temporary file and renamed, so a chunk is either complete or absent. Items are keyed by the
hash of their text, so a rerun computes only what is missing. No pickle anywhere.

Each chunk carries the sha256 of its keys and tensor data in its metadata (safetensors has no
checksum of its own), checked on read: a damaged chunk is an error naming it, or, with
``on_damage="recompute"``, set aside (renamed ``*.damaged``) so its items are probed again.
Chunks written before checksums existed are read unchecked. One process at a time probes into a
folder (:meth:`SignatureStore.writing`, a file lock); readers need no lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from ._io import atomic_write
from ._validation import check_choice, check_file_name
from .errors import NeuroshotError

log = logging.getLogger(__name__)


def text_key(text: str) -> str:
    """The id of a text in the store."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


ON_DAMAGE = ("error", "recompute")


@dataclass
class StoredItem:
    """What the probe keeps per item: its signature and its label scores."""

    neurons: np.ndarray
    values: np.ndarray
    label_scores: np.ndarray


class SignatureStore:
    """A folder of probe results for one key; ``get`` what is there, ``put`` new chunks.

    ``on_damage`` says what a chunk failing its checksum (or unreadable) does: ``"error"`` (the
    default: damage means a failing disk or a foreign writer, which a cache should not hide) raises
    a :class:`NeuroshotError` naming the chunk; ``"recompute"`` warns, sets the chunk aside and
    lets its items be probed again.
    """

    def __init__(self, root: str | Path, settings: Mapping[str, Any], on_damage: str = "error") -> None:
        check_choice("on_damage", on_damage, ON_DAMAGE)
        self.on_damage = on_damage
        self.settings = dict(settings)
        key = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:20]
        self.path = Path(root) / key
        self.path.mkdir(parents=True, exist_ok=True)
        meta = self.path / "settings.json"
        if not meta.exists():
            with atomic_write(meta) as fh:
                json.dump(self.settings, fh, indent=2, sort_keys=True)
        self._items: dict[str, StoredItem] | None = None

    def _load(self) -> dict[str, StoredItem]:
        if self._items is None:
            self._items = {}
            for chunk in sorted(self.path.glob("chunk-*.safetensors")):
                self._items.update(self._read(chunk))
        return self._items

    def refresh(self) -> None:
        """Forget what was read, so the next ``get`` sees chunks other processes wrote since."""
        self._items = None

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold this folder's writer lock: one process decides what is missing and probes it at a time."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path / ".writer.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning("another process is probing into %s: waiting for it to finish", self.path)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def _read(self, path: Path) -> dict[str, StoredItem]:
        """The items of one chunk, checked; a damaged one raises or is set aside (``on_damage``)."""
        try:
            return _read_chunk(path)
        except FileNotFoundError:  # set aside by another process meanwhile
            return {}
        except ChunkDamaged as exc:
            if self.on_damage == "error":
                raise NeuroshotError(f"signature store chunk {path} is damaged ({exc}): delete it or pass "
                                     f"on_damage='recompute' (--on-damage recompute)") from None
            log.warning("signature store chunk %s is damaged (%s): its items are probed again", path, exc)
            with contextlib.suppress(FileNotFoundError):
                path.replace(path.with_name(path.name + ".damaged"))
            return {}

    def get(self, key: str) -> StoredItem | None:
        return self._load().get(key)

    def put(self, items: Mapping[str, StoredItem], name: str | None = None) -> None:
        """Write one chunk atomically (as ``chunk-<name>.safetensors`` when given, else a fresh name)."""
        if not items:
            return
        keys = list(items)
        tensors = {
            "counts": np.array([len(items[k].neurons) for k in keys], dtype=np.int64),
            "neurons": np.concatenate([items[k].neurons for k in keys]).astype(np.int32),
            "values": np.concatenate([items[k].values for k in keys]).astype(np.float32),
            "label_scores": np.stack([items[k].label_scores for k in keys]).astype(np.float32),
        }
        target = self.chunk_path(name or uuid.uuid4().hex)
        metadata = {"keys": json.dumps(keys)}
        metadata["sha256"] = _checksum(metadata["keys"], tensors)
        with atomic_write(target, "wb") as fh:
            fh.write(save(tensors, metadata=metadata))
        if self._items is not None:
            self._items.update(items)

    def stored_keys(self) -> set[str]:
        """The keys of every complete chunk, read from the chunks' headers only (cheap at any size; data
        damage is found when the items are read)."""
        keys: set[str] = set()
        for chunk in self.path.glob("chunk-*.safetensors"):
            try:
                with safe_open(str(chunk), framework="numpy") as fh:
                    keys.update(json.loads(fh.metadata()["keys"]))
            except (SafetensorError, OSError, KeyError, ValueError):
                continue  # unreadable: its items are probed again
        return keys

    def chunk_path(self, name: str) -> Path:
        """Where the chunk called ``name`` lives (it exists once written completely)."""
        return self.path / f"chunk-{check_file_name('chunk name', name)}.safetensors"


class ChunkDamaged(Exception):
    """A chunk that cannot be read or fails its checksum."""


def _checksum(keys: str, tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 over a chunk's keys and its tensors' names, dtypes, shapes and bytes."""
    digest = hashlib.sha256(keys.encode("utf-8"))
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"|{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _read_chunk(path: Path) -> dict[str, StoredItem]:
    """The items of one chunk; raises :class:`ChunkDamaged` if it is unreadable or fails its checksum."""
    try:
        with safe_open(str(path), framework="numpy") as fh:
            metadata = fh.metadata() or {}
            keys = json.loads(metadata["keys"])
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except FileNotFoundError:
        raise
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise ChunkDamaged(f"unreadable: {exc}") from None
    if "sha256" in metadata and _checksum(metadata["keys"], tensors) != metadata["sha256"]:
        raise ChunkDamaged("checksum mismatch")
    try:
        ends = np.cumsum(tensors["counts"])
        starts = ends - tensors["counts"]
        return {key: StoredItem(tensors["neurons"][s:e], tensors["values"][s:e], tensors["label_scores"][i])
                for i, (key, s, e) in enumerate(zip(keys, starts, ends, strict=True))}
    except (KeyError, ValueError, IndexError) as exc:
        raise ChunkDamaged(f"inconsistent: {exc}") from None


__all__ = ["ON_DAMAGE", "SignatureStore", "StoredItem", "text_key"]
