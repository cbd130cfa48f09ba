"""Small file helpers: atomic writes so an interrupted run never leaves a half-written file."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding, newline=None if binary else "") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_rows(path: str | os.PathLike, rows: Sequence[dict], fields: Sequence[str] | None = None) -> None:
    """Write ``rows`` atomically: JSON lines for a ``.jsonl`` path, else CSV with the columns ``fields``
    (default: every key, in first-seen order; keys outside ``fields`` are left out)."""
    path = Path(path)
    with atomic_write(path) as fh:
        if path.suffix.lower() == ".jsonl":
            fh.writelines(json.dumps(row) + "\n" for row in rows)
            return
        writer = csv.DictWriter(fh, fieldnames=list(fields or dict.fromkeys(k for row in rows for k in row)),
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
