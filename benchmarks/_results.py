"""Results files shared by the benchmarks: an append-only JSONL of finished cells, and RESULTS.md sections.

Each finished cell is one JSON line, written and fsync'ed at once, so a killed run loses at most
the cell it was computing and a rerun skips what is there. ``RESULTS.md`` is made of sections,
each rewritten by the benchmark that owns it, between ``<!-- section: NAME -->`` markers.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path


def read_results(path: Path) -> list[dict]:
    """Finished cells; a torn last line (killed mid-write) is ignored."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_result(path: Path, row: dict) -> None:
    """Append one finished cell and make it durable before going on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def update_section(path: Path, name: str, text: str, *, first: bool = False) -> None:
    """Replace section ``name`` of the markdown page ``path`` with ``text`` (added at the top with
    ``first``, else at the end, when the page does not have it yet); other sections stay as they are."""
    start, end = f"<!-- section: {name} -->", f"<!-- /section: {name} -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    page = path.read_text(encoding="utf-8") if path.is_file() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(page):
        page = pattern.sub(lambda _: block, page, count=1)
    elif first:
        page = block + ("\n" + page if page else "")
    else:
        page = page + ("\n" if page and not page.endswith("\n\n") else "") + block
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)


def cell_key(keys: tuple[str, ...], row: dict) -> tuple:
    """What identifies a cell: its values of ``keys`` (a rerun skips rows whose key is already there)."""
    return tuple(row.get(k) for k in keys)


def main_loop(args, run, summarize) -> None:
    """Run the grid (unless ``--summarize``; Ctrl-C keeps every finished cell), then print the summary."""
    import sys
    import time

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not args.summarize:
        t0 = time.perf_counter()
        try:
            run(args)
        except KeyboardInterrupt:
            print("\ninterrupted: finished cells are kept; run the same command again to continue", file=sys.stderr)
        print(f"run took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(summarize(args))
