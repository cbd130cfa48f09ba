"""Tests for neuroshot.annotation: export/import round trips, the crash-safe log, the terminal
session and the simulated annotator. Real files under tmp_path; no model needed."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from neuroshot.annotation import (
    AnnotationItem,
    AnnotationLog,
    SimulatedAnnotator,
    export_for_annotation,
    labelstudio_config_path,
    read_annotations,
    run_annotation_session,
)
from neuroshot.data import Record
from neuroshot.errors import NeuroshotError

LABELS = ["positive", "negative", "neutral"]
ITEMS = [
    AnnotationItem("a", "Great phone, love it.", 1, "covers neurons no other item uses"),
    AnnotationItem("b", 'Broken on arrival, "never" again', 2, "model unsure between two labels"),
    AnnotationItem("c", "It is a phone.\nSecond line, with a comma", 3, "typical of a large cluster"),
]
FILLED = {"a": "positive", "b": "negative", "c": "neutral"}


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _script(*answers: str):
    """An input_fn that replays answers and records the prompts it was given."""
    queue = list(answers)
    prompts: list[str] = []

    def input_fn(prompt: str) -> str:
        prompts.append(prompt)
        if not queue:
            raise EOFError
        return queue.pop(0)

    input_fn.prompts = prompts  # type: ignore[attr-defined]
    return input_fn


# --- export -> fill in -> read back ------------------------------------------------------------


def test_jsonl_round_trip(tmp_path):
    path = export_for_annotation(ITEMS, tmp_path / "plan.jsonl", LABELS)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows[1] == {"id": "b", "text": ITEMS[1].text, "rank": 2, "why": ITEMS[1].why, "label": None}
    assert read_annotations(path, LABELS) == {}  # nothing filled in yet
    for row in rows:
        row["label"] = FILLED[row["id"]]
    _write_lines(path, [json.dumps(r) for r in rows])
    assert read_annotations(path, LABELS) == FILLED


def test_csv_round_trip(tmp_path):
    path = export_for_annotation(ITEMS, tmp_path / "plan.csv", LABELS)
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["id", "text", "rank", "why", "label"]
    assert [r["text"] for r in rows] == [it.text for it in ITEMS]  # quotes, commas, newlines survive
    assert all(r["label"] == "" for r in rows)
    rows[0]["label"], rows[2]["label"] = "positive", "neutral"  # b left for later
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert read_annotations(path, LABELS) == {"a": "positive", "c": "neutral"}


def test_csv_saved_by_a_semicolon_locale_spreadsheet(tmp_path):
    path = tmp_path / "plan.csv"
    path.write_text("id;text;rank;why;label\na;x, y;1;;Positive\nb;z;2;;\n", encoding="utf-8")
    assert read_annotations(path, LABELS) == {"a": "positive"}


def test_labelstudio_round_trip(tmp_path):
    path = export_for_annotation(ITEMS, tmp_path / "plan.json", LABELS + ['a<b & "c"'])
    tasks = json.loads(path.read_text(encoding="utf-8"))
    assert tasks[0] == {"data": {"id": "a", "text": ITEMS[0].text, "rank": 1, "why": ITEMS[0].why}}

    config = labelstudio_config_path(path)
    assert config.name == "plan.labelstudio.xml"
    root = ET.fromstring(config.read_text(encoding="utf-8"))  # well-formed despite <, & and "
    assert root.find("Text").attrib == {"name": "text", "value": "$text"}
    choices = root.find("Choices")
    assert choices.attrib == {"name": "label", "toName": "text", "choice": "single"}
    assert [c.get("value") for c in choices.findall("Choice")] == LABELS + ['a<b & "c"']

    # What Label Studio exports after annotation: its own task ids, our data, annotations.
    def ann(choice, cancelled=False):
        return {"was_cancelled": cancelled, "result": [
            {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}]}

    export = [
        {"id": 101, "data": tasks[0]["data"], "annotations": [ann("negative"), ann("positive")]},
        {"id": 102, "data": tasks[1]["data"], "annotations": [ann("positive", cancelled=True)]},
        {"id": 103, "data": tasks[2]["data"], "annotations": []},
        {"id": 104, "data": {"id": "d", "text": "x"}, "annotations": [ann('a<b & "c"')]},
    ]
    export_path = tmp_path / "export.json"
    export_path.write_text(json.dumps(export), encoding="utf-8")
    assert read_annotations(export_path, LABELS + ['a<b & "c"']) == {"a": "positive", "d": 'a<b & "c"'}


@pytest.mark.parametrize("name", ["plan.txt", "plan"])
def test_export_needs_a_known_format(tmp_path, name):
    with pytest.raises(NeuroshotError, match=r"\.jsonl, \.csv or \.json"):
        export_for_annotation(ITEMS, tmp_path / name, LABELS)
    written = export_for_annotation(ITEMS, tmp_path / name, LABELS, fmt="csv")
    assert written.read_text(encoding="utf-8-sig").startswith("id,text,rank,why,label")


# --- validation on import ------------------------------------------------------------------------


def test_unknown_label_error_names_file_line_value_and_labels(tmp_path):
    path = tmp_path / "filled.jsonl"
    _write_lines(path, ['{"id": "a", "label": "positive"}', "", '{"id": "b", "label": "postive"}'])
    with pytest.raises(NeuroshotError) as err:
        read_annotations(path, LABELS)
    msg = str(err.value)
    assert str(path) in msg and "line 3" in msg and "'postive'" in msg
    assert "positive, negative, neutral" in msg
    assert "\n" not in msg


def test_unknown_label_in_labelstudio_names_task(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([{"data": {"id": "a"}, "annotations": [
        {"result": [{"value": {"choices": ["meh"]}}]}]}]), encoding="utf-8")
    with pytest.raises(NeuroshotError, match=r"task 1: unknown label 'meh'; allowed labels: positive"):
        read_annotations(path, LABELS)


def test_labels_are_matched_ignoring_case_and_spaces(tmp_path):
    path = tmp_path / "filled.jsonl"
    _write_lines(path, ['{"id": "a", "label": "  POSITIVE "}', '{"id": 2, "label": "Negative"}',
                        '{"id": "c", "label": "   "}', '{"id": "d"}'])
    assert read_annotations(path, LABELS) == {"a": "positive", "2": "negative"}


def test_duplicate_id_conflicting_labels(tmp_path):
    path = tmp_path / "filled.jsonl"
    _write_lines(path, ['{"id": "a", "label": "positive"}', '{"id": "a", "label": "Positive"}'])
    assert read_annotations(path, LABELS) == {"a": "positive"}  # same label twice is fine
    _write_lines(path, ['{"id": "a", "label": "positive"}', '{"id": "a", "label": "negative"}'])
    with pytest.raises(NeuroshotError, match="line 2: item 'a' is labelled both 'positive' and 'negative'"):
        read_annotations(path, LABELS)


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("missing.jsonl", None, "not found"),
        ("latin1.csv", "id,label\na,n\xe9gative\n".encode("latin-1"), "not UTF-8"),
        ("broken.jsonl", b'{"id": "a", "label": "positive"}\n{"id": "b", \n', "line 2: not valid JSON"),
        ("broken.json", b'[{"data": {"id": "a"}}', "not valid JSON"),
        ("empty.csv", b"", "empty"),
        ("nolabel.csv", b"id,text\na,x\n", "no 'label' column"),
    ],
)
def test_unreadable_files_give_one_line_errors(tmp_path, name, content, pattern):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(NeuroshotError, match=pattern) as err:
        read_annotations(path, LABELS)
    assert "\n" not in str(err.value)


# --- the append-only log -------------------------------------------------------------------------


def test_log_persists_and_later_line_is_a_correction(tmp_path):
    path = tmp_path / "labels.jsonl"
    log = AnnotationLog(path, LABELS)
    assert len(log) == 0 and "a" not in log
    assert log.add("a", " Negative") == "negative"
    log.add("b", "neutral")
    log.add("a", "positive")  # correction
    reopened = AnnotationLog(path, LABELS)
    assert reopened.labels == {"a": "positive", "b": "neutral"}
    assert len(reopened) == 2 and "b" in reopened and "z" not in reopened
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(entries) == 3 and set(entries[0]) == {"id", "label", "time", "crc"}
    with pytest.raises(NeuroshotError, match="unknown label 'great'"):
        log.add("c", "great")
    assert "c" not in log and len(path.read_text(encoding="utf-8").splitlines()) == 3


def test_log_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    AnnotationLog(path, LABELS).add("a", "positive")
    with path.open("ab") as fh:  # as if killed with -9 in the middle of the next write
        fh.write(b'{"id": "b", "label": "nega')
    log = AnnotationLog(path, LABELS)
    assert log.labels == {"a": "positive"}
    log.add("c", "neutral")
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]  # valid JSONL
    assert [(e["id"], e["label"]) for e in entries] == [("a", "positive"), ("c", "neutral")]
    assert AnnotationLog(path, LABELS).labels == {"a": "positive", "c": "neutral"}


def test_log_keeps_a_complete_last_line_without_newline(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"id": "a", "label": "positive", "time": "t"}', encoding="utf-8")  # hand-edited
    log = AnnotationLog(path, LABELS)
    assert log.labels == {"a": "positive"}
    log.add("b", "negative")
    assert AnnotationLog(path, LABELS).labels == {"a": "positive", "b": "negative"}
    assert path.read_text(encoding="utf-8").count("\n") == 2


@pytest.mark.parametrize("old, new", [(b'"id": "b1"', b'"id": "b3"'), (b'"negative"', b'"negativf"'),
                                      (b'"neutral"', b'"negative"')])
def test_log_detects_a_flipped_byte_in_an_id_or_label(tmp_path, old, new):
    """A change that leaves valid JSON and a known label is caught by the line's checksum."""
    path = tmp_path / "labels.jsonl"
    log = AnnotationLog(path, LABELS)
    log.add("b1", "negative")
    log.add("b2", "neutral")
    raw = path.read_bytes()
    assert raw.count(old) == 1
    path.write_bytes(raw.replace(old, new))
    with pytest.raises(NeuroshotError, match=r"labels.jsonl: line \d: damaged \(checksum mismatch"):
        AnnotationLog(path, LABELS)


def test_log_reports_a_corrupt_middle_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    _write_lines(path, ['{"id": "a", "label": "positive"}', "garbage", '{"id": "b", "label": "neutral"}'])
    with pytest.raises(NeuroshotError, match="line 2: not a label entry"):
        AnnotationLog(path, LABELS)


# --- the terminal session ------------------------------------------------------------------------


def test_session_numbers_names_invalid_skip_quit_then_resume(tmp_path):
    items = ITEMS + [AnnotationItem("d", "Meh.", 4, "borderline"), AnnotationItem("e", "Fine.", 5)]
    log = AnnotationLog(tmp_path / "labels.jsonl", LABELS)
    shown: list[str] = []
    # a <- "1"; b <- "7" (rejected) then "NEG"; c <- "x" (rejected) then "s" (skip); d <- "q".
    answers = _script("1", "7", "NEG", "x", "s", "q")
    given = run_annotation_session(list(reversed(items)), LABELS, log, input_fn=answers, print_fn=shown.append)
    out = "\n".join(map(str, shown))

    assert given == 2
    assert log.labels == {"a": "positive", "b": "negative"}
    assert answers.prompts[0] == "label (number or name; s = skip, q = quit): "
    assert "[1/5] covers neurons no other item uses" in out and "Great phone, love it." in out
    assert "  1) positive\n  2) negative\n  3) neutral" in out
    assert "no label number 7: choose 1-3" in out
    assert "unknown label 'x'" in out  # c: invalid, then skipped
    assert out.index("[1/5]") < out.index("[2/5]") < out.index("[3/5]") < out.index("[4/5]")  # rank order
    assert "[5/5]" not in out  # quit on d
    assert shown[-1].startswith("2 labelled now; 2 of 5 labelled, 3 remaining")

    # A rerun (new process: reopen the log) continues with c, the first item not yet labelled.
    log2 = AnnotationLog(tmp_path / "labels.jsonl", LABELS)
    shown2: list[str] = []
    # c <- "neu" (unique prefix); d <- "2"; e <- "Positive" (name, any case).
    given2 = run_annotation_session(items, LABELS, log2, input_fn=_script("neu", "2", "Positive"),
                                    print_fn=shown2.append)
    out2 = "\n".join(shown2)
    assert given2 == 3
    assert "[1/5]" not in out2 and "[2/5]" not in out2 and "[3/5]" in out2
    assert AnnotationLog(tmp_path / "labels.jsonl", LABELS).labels == {
        "a": "positive", "b": "negative", "c": "neutral", "d": "negative", "e": "positive"}
    assert shown2[-1].startswith("3 labelled now; 5 of 5 labelled, 0 remaining")


def test_session_rejects_ambiguous_prefix(tmp_path):
    log = AnnotationLog(tmp_path / "labels.jsonl", LABELS)
    shown: list[str] = []
    given = run_annotation_session(ITEMS[:1], LABELS, log, input_fn=_script("ne", "neg"), print_fn=shown.append)
    assert given == 1 and log.labels == {"a": "negative"}
    assert any("could be negative, neutral" in str(line) for line in shown)


@pytest.mark.parametrize("stop", [EOFError, KeyboardInterrupt])
def test_session_ends_cleanly_on_eof_or_ctrl_c(tmp_path, stop):
    log = AnnotationLog(tmp_path / "labels.jsonl", LABELS)
    answers = iter(["2"])

    def input_fn(prompt):
        try:
            return next(answers)
        except StopIteration:
            raise stop from None

    shown: list[str] = []
    given = run_annotation_session(ITEMS, LABELS, log, input_fn=input_fn, print_fn=shown.append)
    assert given == 1
    assert AnnotationLog(tmp_path / "labels.jsonl", LABELS).labels == {"a": "negative"}
    assert shown[-1].startswith("1 labelled now; 1 of 3 labelled, 2 remaining")


def test_session_with_numeric_labels_takes_names_only(tmp_path):
    labels = ["1", "2", "3"]  # e.g. star ratings: "1" must mean the label "1", not the first entry
    log = AnnotationLog(tmp_path / "labels.jsonl", labels)
    answers = _script("3")
    run_annotation_session(ITEMS[:1], labels, log, input_fn=answers, print_fn=lambda *a: None)
    assert log.labels == {"a": "3"}
    assert answers.prompts == ["label (name; s = skip, q = quit): "]


# --- simulated annotator -------------------------------------------------------------------------


def test_simulated_annotator_reveals_only_requested_ids():
    records = [Record("a", "x", "positive"), Record("b", "y", "negative"), Record("c", "z", "neutral")]
    annotator = SimulatedAnnotator.from_records(records)
    assert annotator.annotate(["c"]) == {"c": "neutral"}
    assert annotator(["a"]) == {"a": "positive"}
    assert annotator.revealed == {"a", "c"}
    public = {name: getattr(annotator, name) for name in dir(annotator) if not name.startswith("_")}
    assert not any(isinstance(v, dict) and "b" in v for v in public.values())  # gold of b not exposed
    assert "negative" not in repr(annotator)
    with pytest.raises(NeuroshotError, match="no gold label"):
        annotator.annotate(["zzz"])
    assert annotator.revealed == {"a", "c"}


def test_simulated_annotator_needs_gold_labels():
    with pytest.raises(NeuroshotError, match="'b' has no gold label"):
        SimulatedAnnotator.from_records([Record("a", "x", "positive"), Record("b", "y")])
