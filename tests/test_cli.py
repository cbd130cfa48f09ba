"""The CLI: clear one-line errors and no output file on bad input; annotate survives kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neuroshot.cli import main


@pytest.fixture(scope="module")
def unsupported_model_dir(tmp_path_factory) -> Path:
    """A tiny GPT-NeoX folder: a causal LM whose MLP (dense_4h_to_h) neuroshot does not read."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("neox")
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate("a b text label ticket".split())}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)
    cfg = GPTNeoXConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, max_position_embeddings=64)
    GPTNeoXForCausalLM(cfg).save_pretrained(folder)
    return folder


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _pool(tmp_path: Path, n: int = 5) -> Path:
    return _write(tmp_path / "pool.jsonl", [{"id": f"i{i}", "text": f"ticket number {i} about things"} for i in range(n)])


def _fails(capsys, argv: list[str], *expected: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("neuroshot: error: "), err
    assert "Traceback" not in err
    for word in expected:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case, expected", [
    ("missing", "not found"),
    ("empty", "empty"),
    ("latin1", "not UTF-8"),
    ("no_text", "no 'text' field"),
    ("duplicate", "duplicate text"),
    ("bad_json", "not valid JSON"),
])
def test_plan_rejects_bad_data_files(tmp_path, capsys, case, expected):
    data = tmp_path / "pool.jsonl"
    if case == "empty":
        data.write_text("\n", encoding="utf-8")
    elif case == "latin1":
        data.write_bytes('{"text": "caf\u00e9 cr\u00e8me"}\n'.encode("latin-1"))
    elif case == "no_text":
        _write(data, [{"id": "a", "body": "hello"}])
    elif case == "duplicate":
        _write(data, [{"id": "a", "text": "same"}, {"id": "b", "text": "same"}])
    elif case == "bad_json":
        data.write_text('{"text": "ok"}\n{"text": oops}\n', encoding="utf-8")
    out = tmp_path / "plan.jsonl"
    _fails(capsys, ["plan", str(data), "--labels", "a,b", "--budget", "1", "--out", str(out)], expected)
    assert not out.exists()


@pytest.mark.parametrize("budget, expected", [("0", "--budget must be a whole number >= 1"), ("-3", "--budget must be a whole number >= 1"), ("6", "larger than the 5")])
def test_plan_rejects_bad_budget(tmp_path, capsys, budget, expected):
    out = tmp_path / "plan.csv"
    _fails(capsys, ["plan", str(_pool(tmp_path)), "--labels", "a,b", "--budget", budget, "--out", str(out)], expected)
    assert not out.exists()


def test_plan_rejects_a_single_label(tmp_path, capsys):
    _fails(capsys, ["plan", str(_pool(tmp_path)), "--labels", "only", "--budget", "1"], "at least two")


def test_plan_rejects_unknown_label_in_labeled_file(tmp_path, capsys):
    labeled = _write(tmp_path / "labels.jsonl", [{"id": "i0", "label": "billing"}, {"id": "i1", "label": "bogus"}])
    out = tmp_path / "next.jsonl"
    line = _fails(capsys, ["plan", str(_pool(tmp_path)), "--labels", "billing,shipping", "--budget", "1",
                           "--labeled", str(labeled), "--out", str(out)], "bogus")
    assert "billing" in line and "shipping" in line  # names the allowed labels
    assert not out.exists()


def test_plan_rejects_unknown_strategy_and_bad_task_file(tmp_path, capsys):
    _fails(capsys, ["plan", str(_pool(tmp_path)), "--labels", "a,b", "--budget", "1", "--strategy", "magic"],
           "unknown strategy", "neufs")
    task = tmp_path / "task.json"
    task.write_text("{not json", encoding="utf-8")
    _fails(capsys, ["plan", str(_pool(tmp_path)), "--task", str(task), "--budget", "1"], "not valid JSON")


def test_plan_rejects_unsupported_architecture(tmp_path, capsys, unsupported_model_dir):
    out = tmp_path / "plan.jsonl"
    _fails(capsys, ["plan", str(_pool(tmp_path)), "--labels", "a,b", "--budget", "1", "--model",
                    str(unsupported_model_dir), "--out", str(out)], "unsupported architecture", "down_proj")
    assert not out.exists()


def test_help_explains_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("plan", "annotate", "demo", "examples"):
        assert word in text


def _plan_file(tmp_path: Path) -> Path:
    rows = [{"id": f"i{i}", "text": f"text {i}", "rank": i + 1, "why": "test", "label": None} for i in range(4)]
    return _write(tmp_path / "plan.jsonl", rows)


def test_annotate_session_from_cli(tmp_path, capsys, monkeypatch):
    answers = iter(["2", "billing", "nonsense", "1", "q"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    out = tmp_path / "labels.jsonl"
    assert main(["annotate", str(_plan_file(tmp_path)), "--labels", "billing,shipping", "--out", str(out)]) == 0
    given = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(g["id"], g["label"]) for g in given] == [("i0", "shipping"), ("i1", "billing"), ("i2", "billing")]


def test_annotate_survives_kill_9_and_continues(tmp_path):
    plan, out = _plan_file(tmp_path), tmp_path / "labels.jsonl"
    cmd = [sys.executable, "-m", "neuroshot.cli", "annotate", str(plan), "--labels", "billing,shipping", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    proc.stdin.write("1\n2\n")
    proc.stdin.flush()
    deadline = time.time() + 30
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [json.loads(x)["label"] for x in out.read_text().splitlines()] == ["billing", "shipping"]
    rerun = subprocess.run(cmd, input="2\n1\n", capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    labels = {json.loads(x)["id"]: json.loads(x)["label"] for x in out.read_text().splitlines()}
    assert labels == {"i0": "billing", "i1": "shipping", "i2": "shipping", "i3": "billing"}
