"""What the benchmarks share: an append-only JSONL of finished cells, markdown sections, provenance.

Each finished cell is one JSON line, written and fsync'ed at once, so a killed run loses at most
the cell it was computing and a rerun skips what is there. ``RESULTS.md`` and ``README.md`` are
made of sections, each rewritten by the benchmark that owns it, between ``<!-- section: NAME -->``
markers. Every row and summary records when and by which command it was made.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from neuroshot.data import split_lines


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, and epilogs with examples kept as written."""


def now() -> str:
    """The current UTC time, to the second (ISO 8601)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def provenance(script: str, argv: list[str] | None = None) -> dict:
    """``date`` and the ``command`` that reruns this (``script`` relative to the repository root)."""
    args = sys.argv[1:] if argv is None else argv
    return {"date": now(), "command": ".venv/bin/python " + shlex.join([script, *args])}


def environment(lm) -> dict:
    """The machine, library versions, model and exact command of a timed run (``lm``: the loaded model)."""
    import numpy
    import torch
    import transformers

    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    try:
        exe = Path(argv[0]).absolute()
        argv[0] = os.path.relpath(exe, Path.cwd()) if exe.is_relative_to(Path.cwd()) else argv[0]
    except (OSError, ValueError):
        pass
    return {
        "date": now(), "command": shlex.join(argv), "cwd": str(Path.cwd()),
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "numpy": numpy.__version__, "platform": platform.platform(), "processor": platform.processor(),
        "cpu_count": os.cpu_count(), "cpu_affinity": len(os.sched_getaffinity(0)),
        "load_average_at_start": list(os.getloadavg()),
        "torch_threads": torch.get_num_threads(), "device": str(lm.device), "dtype": str(lm.dtype),
        "model": lm.name, "model_fingerprint": lm.fingerprint, "n_layers": lm.n_layers, "d_ff": lm.d_ff,
    }


def is_smoke(args: argparse.Namespace, full: dict) -> bool:
    """Whether a timed run is smaller than the full run's settings ``full`` (option: value)."""
    return any(getattr(args, name) < value for name, value in full.items())


def timed_section(results: dict, items: str, full: dict, settings: str, body: list[str]) -> str:
    """The README section of a timed run (``--n`` ``items``, ``--repeats``): a full run, or a smoke run (smaller than
    ``full``) whose timings are only indicative; when and where it ran, from :func:`environment` (with
    ``load_average_at_end`` added at the end of the run), with its ``settings``; ``body``; the command."""
    env, a = results["env"], results["args"]
    what = f"n={a['n']} {items}, {a['repeats']} repeat(s)"
    defaults = ", ".join(f"{name}={value}" for name, value in full.items())
    head = (f"**Smoke run** ({what}): timings are indicative only; the full run uses the defaults ({defaults})."
            if results["smoke"] else f"Full run: {what}, median reported.")
    machine = (f"{env['date']}, {env['model']} on {env['device']} ({env['dtype']}), {env['cpu_count']} CPU(s), "
               f"{env['torch_threads']} torch threads (1-min load average {env['load_average_at_start'][0]:.1f} at "
               f"the start, {env['load_average_at_end'][0]:.1f} at the end), torch {env['torch']}, "
               f"transformers {env['transformers']}; batch size {a['batch_size']}, texts truncated to "
               f"{a['max_text_tokens']} tokens, {settings}")
    return "\n".join([head, "", machine, "", *body, "Command:", "", "```", env["command"], "```"])


def run_child(script: str, argv: list[str]) -> dict:
    """Run ``script`` with ``argv`` in a fresh Python process (no progress bars) and return the JSON object
    its last output line holds: measurements that must not share a process (peak memory, a cold start)."""
    proc = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{Path(script).name} {shlex.join(argv)} failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-4000:]}")
    return json.loads(lines[-1])


def require_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """Stop with a usage error at the first option of ``names`` (``dest`` names) below 1."""
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")


def plain_args(args: argparse.Namespace) -> dict:
    """The options of a run as JSON values (paths as strings), internal ones (``--_x``) left out."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")}


def report(args: argparse.Namespace, results: dict, t_start: float, printed: str, section: str, title: str,
           readme_section) -> None:
    """The end of a timed run started at ``t_start`` (``time.perf_counter``): ``results`` with its
    ``total_seconds`` to ``--out``, ``printed`` to stdout and, with ``--write-readme``, ``readme_section(results)``
    as section ``section`` of ``--readme``."""
    results["total_seconds"] = time.perf_counter() - t_start
    write_json(args.out, results)
    print(printed)
    print(f"\nwrote {args.out} ({results['total_seconds']:.0f} s in all)")
    if args.write_readme:
        update_section(args.readme, section, readme_section(results))
        print(f"rewrote the {title} section of {args.readme}")


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON, making the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def read_results(path: Path) -> list[dict]:
    """Finished cells; a torn last line (killed mid-write) is ignored."""
    if not path.is_file():
        return []
    rows = []
    for line in split_lines(path.read_text(encoding="utf-8")):
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
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not args.summarize:
        t0 = time.perf_counter()
        try:
            run(args)
        except KeyboardInterrupt:
            print("\ninterrupted: finished cells are kept; run the same command again to continue", file=sys.stderr)
        print(f"run took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(summarize(args))
