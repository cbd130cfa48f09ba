"""A crash-safe log of labels given in the terminal: one fsync'ed JSONL line per label.

Each line carries a CRC-32 of its id, label and time (``"crc"``), so a flipped byte that still
leaves valid JSON (an id or label changed) is found on load; lines without it (older logs) are
accepted as they are.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from ..errors import NeuroshotError
from .labels import _LabelSet


def _split_tail(data: bytes) -> tuple[int, bytes]:
    """Split file bytes into the end of the last complete line and an unterminated tail."""
    end = data.rfind(b"\n") + 1
    return end, data[end:]


def _crc(entry: dict) -> str:
    """The checksum of an entry's id, label and time (8 hex digits)."""
    fields = "\x1f".join(str(entry.get(name, "")) for name in ("id", "label", "time"))
    return f"{zlib.crc32(fields.encode('utf-8')):08x}"


def _parse_entry(line: bytes) -> dict | None:
    """A log line as a dict with ``id`` and ``label``, or None if it is not one."""
    try:
        entry = json.loads(line.decode("utf-8-sig"))  # -sig: a BOM left by an editor
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: JSONDecodeError, huge integers
        return None
    if not isinstance(entry, dict) or "label" not in entry:
        return None
    item_id = entry.get("id")
    if isinstance(item_id, bool) or not isinstance(item_id, (str, int)) or not str(item_id).strip():
        return None
    return entry


def _intact(entry: dict) -> bool:
    """False when the entry has a checksum that does not match (a line written without one is intact)."""
    return "crc" not in entry or entry["crc"] == _crc(entry)


def _fsync_dir(path: Path) -> None:
    """Make a newly created file's directory entry durable (POSIX; a no-op elsewhere)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AnnotationLog:
    """Append-only JSONL of labels given, one fsync'ed line ``{"id", "label", "time", "crc"}`` per label.

    Existing labels are loaded on construction; a later line for the same id is a correction and
    wins. A torn last line (the process killed mid-write) is ignored, and removed before the next
    append so the file stays valid JSONL.
    """

    def __init__(self, path: str | os.PathLike, labels: Sequence[str]) -> None:
        self.path = Path(path)
        self._label_set = _LabelSet(labels)
        self._labels: dict[str, str] = {}
        self._tail_checked = False
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            raise NeuroshotError(f"annotation log is not a file: {self.path}")
        data = self.path.read_bytes()
        end, tail = _split_tail(data)
        lines = data[:end].split(b"\n")[:-1]
        if _parse_entry(tail) is not None:  # complete entry, only its newline is missing
            lines.append(tail)
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            entry = _parse_entry(line)
            where = f"{self.path}: line {n}"
            if entry is None:
                raise NeuroshotError(f"{where}: not a label entry ({line[:60]!r}); fix or delete that line")
            if not _intact(entry):
                raise NeuroshotError(f"{where}: damaged (checksum mismatch: {line[:60]!r}); fix or delete that line")
            label = self._label_set.resolve(entry["label"], where)
            if label is not None:
                self._labels[str(entry["id"]).strip()] = label

    def _repair_tail(self) -> None:
        """Before the first append: end a complete last line, or cut a torn one."""
        self._tail_checked = True
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        end, tail = _split_tail(data)
        if not tail:
            return
        with open(self.path, "r+b") as fh:
            if _parse_entry(tail) is not None:
                fh.seek(0, os.SEEK_END)
                fh.write(b"\n")
            else:
                fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())

    @property
    def labels(self) -> dict[str, str]:
        """The current label of every item labelled so far (a copy)."""
        return dict(self._labels)

    @property
    def allowed_labels(self) -> tuple[str, ...]:
        """The label set, in canonical spelling."""
        return self._label_set.names

    def add(self, item_id: str, label: str) -> str:
        """Validate ``label``, append it durably (flush + fsync) and return its canonical spelling."""
        if not isinstance(item_id, str) or not item_id.strip():
            raise ValueError(f"item_id must be a non-empty string, got {item_id!r}")
        item_id = item_id.strip()  # ids are read without surrounding whitespace (``data.clean_id``)
        name = self._label_set.resolve(label, f"label for item {item_id!r}")
        if name is None:
            raise NeuroshotError(f"empty label for item {item_id!r}; allowed labels: {self._label_set}")
        if not self._tail_checked:
            self._repair_tail()
        entry = {"id": item_id, "label": name, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        entry["crc"] = _crc(entry)
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        with open(self.path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        if created:
            _fsync_dir(self.path.parent)
        self._labels[item_id] = name
        return name

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._labels

    def __repr__(self) -> str:
        return f"AnnotationLog({str(self.path)!r}, {len(self)} labelled)"
