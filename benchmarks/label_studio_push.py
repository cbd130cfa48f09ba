"""Seconds of Label Studio server calls for `neuroshot label-studio push` of a large pool (probing aside).

Runs :func:`neuroshot.annotation.label_studio.push` on N pool texts against a real Label Studio
server, with the plan given (a seeded sample of BUDGET ids standing in for the probe and the
planner, whose costs ``cost.py`` and ``scale.py`` measure): project creation, the pool's import
with round 1's predictions in the same requests, the publication of the round; then a rerun (which must import and publish nothing), the publication of a next round
as ``follow`` does it, and the slow path: the pool id -> task id map rebuilt by listing every task
(what a restart does when the map beside the log is missing or incomplete). Without --url it
starts a local server from ``.venv-labelstudio`` (see tests/label_studio_server.py) on SQLite in
a temporary folder.

    python benchmarks/label_studio_push.py --n 10000 --budget 50
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class FixedPlanner:
    """The plan given: the RoundPlanner interface push() and publish_round() use, without a model."""

    def __init__(self, ids: list[str], texts: list[str], labels: tuple[str, ...], seed: int = 0):
        from neuroshot.task import Task

        self.ids, self.texts, self.task = ids, texts, Task(labels=labels)
        self.settings = {"benchmark": "fixed plan", "n": len(ids), "seed": seed}

    def plan(self, round_: int, size: int, labels) -> tuple[list[str], dict[str, str]]:
        picked = random.Random(self.settings["seed"] * 1000 + round_).sample([i for i in self.ids if i not in labels], size)
        return picked, {i: self.task.labels[0] for i in picked}


def texts_of(n: int) -> list[str]:
    """N support-ticket-like texts: the demo's tickets, numbered (the server's cost depends on size, not words)."""
    import json
    from importlib import resources

    rows = [json.loads(line)["text"] for line in resources.files("neuroshot").joinpath(
        "demo_data/support_tickets.jsonl").read_text().splitlines()]
    return [f"{rows[i % len(rows)]} (#{i})" for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--url", help="a running server ($LABEL_STUDIO_API_KEY set); default: start a local one")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
    from neuroshot.annotation.label_studio import LabelStudioClient, RoundState, model_version, publish_round, push
    from neuroshot.annotation.label_studio import TaskMap, task_map_path

    proc = None
    tmp = tempfile.TemporaryDirectory()
    if args.url is None:
        from label_studio_server import start, stop

        t0 = time.perf_counter()
        proc, server = start(Path(tmp.name) / "data")
        print(f"local Label Studio started in {time.perf_counter() - t0:.1f} s at {server.url}")
        os.environ["LABEL_STUDIO_API_KEY"], url = server.token, server.url
    else:
        url = args.url
    try:
        ids = [f"p{i:06d}" for i in range(args.n)]
        planner = FixedPlanner(ids, texts_of(args.n), ("billing", "shipping", "returns", "other"))
        client = LabelStudioClient(url)
        log = Path(tmp.name) / "labels.jsonl"
        title = f"push benchmark {args.n}"
        t0 = time.perf_counter()
        first = push(client, title, planner, args.budget, log)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = push(client, title, planner, args.budget, log)
        t_again = time.perf_counter() - t0
        assert first.imported == args.n and again.imported == 0 and again.round == first.round
        versions = client.model_versions(first.project_id)
        assert versions == {first.round.model_version: args.budget}, versions
        t0 = time.perf_counter()
        task_ids = TaskMap(client, first.project_id, task_map_path(log)).ids
        ids2, _ = planner.plan(2, args.budget, {})
        rnd = RoundState(2, model_version(2, ids2, planner.settings), ids2, 0)
        publish_round(client, first.project_id, rnd, task_ids)
        t_round = time.perf_counter() - t0
        task_map_path(log).unlink()
        t0 = time.perf_counter()
        assert TaskMap(client, first.project_id, task_map_path(log)).ids == task_ids
        t_list = time.perf_counter() - t0
        nxt = client.next_task(first.project_id)
        assert nxt is not None and nxt["data"]["id"] == ids2[0], nxt
        print(f"pool of {args.n} texts, {args.budget} planned; server calls only (the plan given, no probing):")
        print(f"  first push (project, import with round 1's predictions, publication): {t_first:6.1f} s")
        print(f"  rerun of push (imports and publishes nothing):                        {t_again:6.1f} s")
        print(f"  a next round as follow publishes it ({args.budget} predictions, project):       {t_round:6.1f} s")
        print(f"  the task map rebuilt by listing every task (only after a crash mid-import): {t_list:6.1f} s")
        print(f"  /next then serves round 2's first pick: {nxt['data']['id']} (ok)")
    finally:
        if proc is not None:
            stop(proc)
        tmp.cleanup()


if __name__ == "__main__":
    main()
