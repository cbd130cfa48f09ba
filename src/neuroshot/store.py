"""On-disk signature store: chunked safetensors files, resumable after Ctrl-C or kill -9.

One folder per (model, task, method, settings) key; inside, each chunk is written to a
temporary file and renamed, so a chunk is either complete or absent. Items are keyed by the
hash of their text, so a rerun computes only what is missing. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import logging
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from ._io import atomic_write
from ._validation import check_file_name

log = logging.getLogger(__name__)


def text_key(text: str) -> str:
    """The id of a text in the store."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


@dataclass
class StoredItem:
    """What the probe keeps per item: its signature and its label scores."""

    neurons: np.ndarray
    values: np.ndarray
    label_scores: np.ndarray


class SignatureStore:
    """A folder of probe results for one key; ``get`` what is there, ``put`` new chunks."""

    def __init__(self, root: str | Path, settings: Mapping[str, Any]) -> None:
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
                self._items.update(_read_chunk(chunk))
        return self._items

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
        with atomic_write(target, "wb") as fh:
            fh.write(save(tensors, metadata={"keys": json.dumps(keys)}))
        if self._items is not None:
            self._items.update(items)

    def stored_keys(self) -> set[str]:
        """The keys of every complete chunk, read from the chunks' headers only (cheap at any size)."""
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


def _read_chunk(path: Path) -> Iterable[tuple[str, StoredItem]]:
    """The items of one chunk; an unreadable chunk is skipped (its items are simply probed again)."""
    try:
        with safe_open(str(path), framework="numpy") as fh:
            keys = json.loads(fh.metadata()["keys"])
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        log.warning("skipping unreadable signature chunk %s (%s)", path.name, exc)
        return []
    ends = np.cumsum(tensors["counts"])
    starts = ends - tensors["counts"]
    return [(key, StoredItem(tensors["neurons"][s:e], tensors["values"][s:e], tensors["label_scores"][i]))
            for i, (key, s, e) in enumerate(zip(keys, starts, ends))]


__all__ = ["SignatureStore", "StoredItem", "text_key"]
