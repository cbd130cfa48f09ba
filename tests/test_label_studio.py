"""The live Label Studio loop against a real Label Studio 1.23.2 server (see label_studio_server.py).

What an annotator is served is read from ``GET /api/projects/{id}/next`` as the test's user, and
each served task is then annotated through the API (a served task stays locked to its user until
submitted), exactly as the labeling page does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import pytest
from label_studio_server import annotate

from neuroshot.annotation.label_studio import (Follower, LabelStudioClient, LabelStudioUnavailable, LoopState,
                                               RoundPlanner,
                                               label_studio_pairs, log_pairs, state_path)
from neuroshot.cli import main
from neuroshot.data import Record

pytestmark = pytest.mark.labelstudio
ROOT = Path(__file__).resolve().parents[1]
LABELS = ("pos", "neg", "other")


@pytest.fixture
def env(label_studio, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    monkeypatch.delenv("NEUROSHOT_KILL_AT", raising=False)
    return label_studio


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from conftest import build_char_tokenizer, build_tiny_llama

    folder = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_llama().save_pretrained(folder)
    build_char_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_pool(tmp_path):
    from conftest import TINY_TEXTS

    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(TINY_TEXTS)))
    return path


def serve_and_label(client: LabelStudioClient, project_id: int, n: int, label_of) -> list[str]:
    """The pool ids of the next ``n`` tasks Label Studio serves, each labelled ``label_of(pool id)`` once served."""
    served = []
    for _ in range(n):
        task = client.next_task(project_id)
        assert task is not None, f"nothing served after {served}"
        served.append(task["data"]["id"])
        annotate(client, task["id"], label_of(task["data"]["id"]))
    return served


def state_of(log: Path) -> LoopState:
    state = LoopState.read(state_path(log))
    assert state is not None
    return state


def tiny_args(pool: Path, url: str, project: str, log: Path, model: Path) -> list[str]:
    return [str(pool), "--labels", ",".join(LABELS), "--url", url, "--project", project, "--log", str(log),
            "--strategy", "entropy", "--model", str(model), "--store", str(log.parent / "store")]


@pytest.mark.e2e
def test_push_serves_the_recommended_plan_in_order_then_follow_serves_the_next_round(env, tmp_path, capsys):
    """The real default model and the recommended pipeline, end to end: push -> /next order is the plan;
    a batch of labels -> follow publishes round 2 -> /next order is round 2's plan."""
    rows = [json.loads(line) for line in resources.files("neuroshot").joinpath(
        "demo_data/support_tickets.jsonl").read_text().splitlines()][:24]
    gold = {r["id"]: r["label"] for r in rows}
    labels = sorted(set(gold.values()))
    pool = tmp_path / "tickets.jsonl"
    pool.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows))
    log = tmp_path / "labels.jsonl"
    args = [str(pool), "--labels", ",".join(labels), "--url", env.url, "--project", "tickets", "--log", str(log),
            "--store", str(tmp_path / "store")]
    assert main(["label-studio", "push", *args, "--budget", "4", "--pre-annotate"]) == 0
    round1 = state_of(log).rounds[0]
    assert len(round1.ids) == 4
    client = LabelStudioClient(env.url)
    pid = state_of(log).project_id
    assert serve_and_label(client, pid, 4, gold.get) == round1.ids  # served in plan order

    from neuroshot.models import load_model
    from neuroshot.pipelines import get_pipeline
    from neuroshot.task import Task

    planner = RoundPlanner(load_model("default"), Task(labels=tuple(labels)), list(gold),
                           [r["text"] for r in rows], get_pipeline("recommended").make_strategy(),
                           probe_kwargs=dict(store=tmp_path / "store"), progress=False)
    follower = Follower(client, "tickets", planner, log, batch=4, rounds=2, pre_annotate=True)
    published = follower.step()
    assert [r.round for r in published] == [2] and published[0].labels_used == 4
    round2 = published[0]
    assert not set(round2.ids) & set(round1.ids) and len(round2.ids) == 4
    assert client.next_task(pid)["data"]["id"] == round2.ids[0]
    assert serve_and_label(client, pid, 4, gold.get) == round2.ids  # the next round, in its plan order
    assert not follower.step() and follower.done
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [x["id"] for x in lines] == round1.ids + round2.ids  # each label once, in annotation order
    pairs = label_studio_pairs(env.url, "tickets", labels)
    texts = {r["id"]: r["text"] for r in rows}
    assert pairs == [(texts[i], gold[i]) for i in round1.ids + round2.ids]
    assert log_pairs(log, [Record(r["id"], r["text"]) for r in rows], labels) == pairs


def follow_cli(args: list[str], kill_at: str | None, env_server) -> subprocess.CompletedProcess:
    env = {**os.environ, "LABEL_STUDIO_API_KEY": env_server.token,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "integrations")])}
    env.pop("NEUROSHOT_KILL_AT", None)
    if kill_at:
        env["NEUROSHOT_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "neuroshot.cli", "label-studio", "follow", *args, "--interval", "0.2"],
                          env=env, capture_output=True, text=True, timeout=120)


def test_follow_killed_between_reading_and_publishing_then_restarted_equals_an_uninterrupted_run(
        env, tmp_path, tiny_pool, tiny_model_dir):
    client = LabelStudioClient(env.url)
    label_of = {f"t{i}": LABELS[i % 3] for i in range(12)}.get
    runs = {}
    for name in ("killed", "uninterrupted"):
        log = tmp_path / name / "labels.jsonl"
        args = tiny_args(tiny_pool, env.url, f"kill-{name}", log, tiny_model_dir)
        assert main(["label-studio", "push", *args, "--budget", "3"]) == 0
        pid = state_of(log).project_id
        assert serve_and_label(client, pid, 3, label_of) == state_of(log).rounds[0].ids
        runs[name] = (args, log, pid)

    args, log, pid = runs["killed"]
    follow = [*args, "--batch", "3", "--rounds", "2"]
    killed = follow_cli(follow, "logged", env)  # kill -9 after the labels are logged, before planning
    assert killed.returncode == -9, killed.stderr
    assert len(log.read_text().splitlines()) == 3 and len(state_of(log).rounds) == 1
    killed = follow_cli(follow, "imported", env)  # kill -9 after round 2's predictions, before the project is set
    assert killed.returncode == -9, killed.stderr
    assert len(state_of(log).rounds) == 1
    v2 = [v for v in client.model_versions(pid) if "round2" in v]
    assert len(v2) == 1 and client.request("GET", f"/api/projects/{pid}/")["model_version"] != v2[0]

    from neuroshot.models import load_model
    from neuroshot.strategies import get_strategy
    from neuroshot.task import Task

    def follower(args, log) -> Follower:
        from conftest import TINY_TEXTS

        planner = RoundPlanner(load_model(str(tiny_model_dir)), Task(labels=LABELS), [f"t{i}" for i in range(12)],
                               TINY_TEXTS, get_strategy("entropy"), probe_kwargs=dict(store=log.parent / "store"),
                               progress=False)
        return Follower(client, args[args.index("--project") + 1], planner, log, batch=3, rounds=2)

    (log.parent / "labels.jsonl.tasks.json").unlink()  # the restart lists the project's tasks instead
    restarted = follower(args, log)
    assert [r.round for r in restarted.step()] == [2]
    ref_args, ref_log, ref_pid = runs["uninterrupted"]
    reference = follower(ref_args, ref_log)
    assert [r.round for r in reference.step()] == [2]
    mine, theirs = state_of(log).rounds, state_of(ref_log).rounds
    assert mine == theirs  # the same ids, order, labels used and model version
    entries = [(x["id"], x["label"]) for x in map(json.loads, log.read_text().splitlines())]
    assert entries == [(x["id"], x["label"]) for x in map(json.loads, ref_log.read_text().splitlines())]
    assert [i for i, _ in entries] == mine[0].ids  # every label exactly once
    assert client.model_versions(pid) == {mine[0].model_version: 3, mine[1].model_version: 3}  # nothing twice
    assert client.request("GET", f"/api/projects/{pid}/")["model_version"] == mine[1].model_version
    assert serve_and_label(client, pid, 3, label_of) == mine[1].ids


def test_bad_input_gives_one_line_and_exit_2(env, tmp_path, tiny_pool, tiny_model_dir, capsys, monkeypatch):
    def fails(argv: list[str], expected: str) -> None:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("neuroshot: error:") and expected in err and len(err.splitlines()) == 1, err

    log = tmp_path / "labels.jsonl"
    args = tiny_args(tiny_pool, env.url, "bad-input", log, tiny_model_dir)
    closed = f"http://127.0.0.1:{__import__('label_studio_server').free_port()}"
    fails(["label-studio", "push", *tiny_args(tiny_pool, closed, "x", log, tiny_model_dir), "--budget", "3"],
          "cannot reach Label Studio")
    fails(["label-studio", "push", *tiny_args(tiny_pool, env.url + "/nothing", "x", log, tiny_model_dir),
           "--budget", "3"], "a Label Studio server")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "0" * 40)
    fails(["label-studio", "push", *args, "--budget", "3"], "rejected the API key in $LABEL_STUDIO_API_KEY")
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    fails(["label-studio", "push", *args, "--budget", "3"], "no API key")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", env.token)

    client = LabelStudioClient(env.url)
    client.create_project("other-labels", ["yes", "no"])
    fails(["label-studio", "push", *tiny_args(tiny_pool, env.url, "other-labels", log, tiny_model_dir),
           "--budget", "3"], "labels with yes, no, but the task's labels are pos, neg, other")

    assert main(["label-studio", "push", *args, "--budget", "3"]) == 0
    pid = state_of(log).project_id
    task = client.next_task(pid)
    annotate(client, task["id"], "maybe")
    fails(["label-studio", "follow", *args, "--batch", "3", "--rounds", "2"],
          f"Label Studio task {task['id']} (pool id {task['data']['id']!r})")
    assert env.token not in (tmp_path / "labels.jsonl.state.json").read_text()


class _Flaky(BaseHTTPRequestHandler):
    answers: list[int] = []

    def do_GET(self):  # noqa: N802
        code = self.answers.pop(0) if self.answers else 200
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"id": 1}' if code == 200 else b"{}")

    def log_message(self, *args):
        pass


def test_5xx_answers_are_retried_with_one_line_each():
    _Flaky.answers = [503, 502]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    lines: list[str] = []
    try:
        client = LabelStudioClient(f"http://127.0.0.1:{httpd.server_port}", "key", say=lines.append)
        assert client.request("GET", "/api/projects/1/") == {"id": 1}
        assert len(lines) == 2 and "503" in lines[0] and "retrying in 1 s" in lines[0] and "502" in lines[1]
        assert "key" not in "".join(lines)
        _Flaky.answers = [500] * 10
        client.max_wait = 2
        with pytest.raises(LabelStudioUnavailable, match="still after 1 s of retries"):
            client.request("GET", "/api/projects/1/")
    finally:
        httpd.shutdown()
