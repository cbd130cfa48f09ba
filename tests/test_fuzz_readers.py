"""Fuzzed input (hypothesis) on every reader: data files, label files, plan files, the annotation log,
task files and templates, and the CLI. Each input either parses to what was written or fails with
one ``NeuroshotError`` naming the file (and the line, where there is one); nothing else escapes.

Bounded: few examples each, derandomized (the same inputs on every run), no deadline.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from neuroshot import NeuroshotError, Task, load_records
from neuroshot.annotation import AnnotationItem, AnnotationLog, read_annotation_items, read_annotations
from neuroshot.cli import main

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
LABELS = ["positive", "Négatif", "n e u t r a l", "ß-sharp", "42"]

# characters that break naive readers: line separators str.splitlines honours, BOM, NUL, quotes, braces
TRICKY = "\u0085\u2028\u2029\x1c\x1d\x1e\x0b\x0c\ufeff\x00\"',;\t{}\\é漢🙂 \r\n"
text_chars = st.one_of(st.characters(codec="utf-8", exclude_categories=("Cs",)), st.sampled_from(TRICKY))
long_text = st.builds(lambda c, n: "x" + c * n, st.sampled_from("a\u2028é漢"), st.integers(1_000, 60_000))
texts = st.one_of(st.text(text_chars, min_size=1, max_size=40), long_text).filter(lambda t: t.strip())
ids = st.one_of(st.text(text_chars, min_size=1, max_size=12).filter(lambda t: t.strip()),
                st.integers(-10**20, 10**20),
                st.floats(allow_nan=False, allow_infinity=False))
SPACE = st.sampled_from(["", " ", "\t", "\u00a0", "\u2028", "  \u0085"])

# bytes a mutation inserts: NUL, invalid UTF-8, BOMs, line ends, JSON and CSV syntax
NASTY = [b"\x00", b"\xff", b"\xc3", b"\xe2\x80", b"\xef\xbb\xbf", b"\r", b"\n", b"\r\n", b'"', b"{", b"}",
         b",", b";", b":", b"[", b"\xe2\x80\xa8", b"\xc2\x85", b'"id": 1, "id": 2', b"9" * 5000]


def _mutate(data: st.DataObject, raw: bytes) -> bytes:
    """``raw`` with a few random insertions, deletions or a truncation."""
    for _ in range(data.draw(st.integers(0, 4), label="mutations")):
        at = data.draw(st.integers(0, len(raw)), label="at")
        kind = data.draw(st.sampled_from(["insert", "delete", "truncate"]), label="kind")
        if kind == "insert":
            raw = raw[:at] + data.draw(st.sampled_from(NASTY), label="bytes") + raw[at:]
        elif kind == "delete":
            raw = raw[:at] + raw[at + data.draw(st.integers(1, 8), label="n"):]
        else:
            raw = raw[:at]
    return raw


def _newline(data: st.DataObject) -> str:
    return data.draw(st.sampled_from(["\n", "\r\n"]), label="newline")


def _bom(data: st.DataObject) -> bytes:
    return data.draw(st.sampled_from([b"", b"\xef\xbb\xbf"]), label="bom")


def _jsonl(rows: list[dict], newline: str, ascii_only: bool) -> str:
    return "".join(json.dumps(row, ensure_ascii=ascii_only) + newline for row in rows)


def _csv(rows: list[dict], fields: list[str], newline: str) -> str:
    out = io.StringIO()
    # csv quotes a field holding a character of the line terminator only: with "\n" a lone "\r" would
    # go unquoted and the file would be ambiguous, so those files quote every field (as some tools do)
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator=newline,
                            quoting=csv.QUOTE_ALL if newline == "\n" else csv.QUOTE_MINIMAL)
    writer.writeheader()
    writer.writerows({k: "" if row.get(k) is None else row[k] for k in fields} for row in rows)
    return out.getvalue()


def _fails_clearly(read: Callable[[], object], path: Path, *, file_level: tuple[str, ...] = ()) -> object | None:
    """``read()``'s result, or None after checking its ``NeuroshotError`` names ``path`` and a line
    (unless the message is about the whole file: one of ``file_level``)."""
    try:
        result = read()
    except NeuroshotError as exc:
        message = str(exc)
        event("NeuroshotError: " + message.replace(str(path), "<file>")[:40])  # --hypothesis-show-statistics
        assert "\n" not in message, message
        assert str(path) in message, message
        if not any(word in message for word in file_level):
            assert re.search(r": (line|task|item) \d+", message), message
        return None
    event("parsed")
    return result


def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="neuroshot-fuzz-"))


# --------------------------------------------------------------------------- load_records

record_rows = st.lists(st.tuples(ids, texts, st.one_of(st.none(), st.sampled_from(LABELS))), min_size=1, max_size=6,
                       unique_by=(lambda r: str(r[0]).strip(), lambda r: r[1].strip()))
FILE_LEVEL = ("is empty", "no items", "not found")


@FUZZ
@given(rows=record_rows, fmt=st.sampled_from(["jsonl", "csv"]), newline=st.sampled_from(["\n", "\r\n"]),
       ascii_only=st.booleans(), bom=st.sampled_from([b"", b"\xef\xbb\xbf"]))
@example(rows=[("a", "a film\u2028with a line separator", "positive"), (2, "b\u0085c", None)], fmt="jsonl",
         newline="\n", ascii_only=False, bom=b"").via("regression: str.splitlines split JSON strings at U+2028 / U+0085")
@example(rows=[(" 7 ", "x\u2029y", "42"), (1.5, "z", None)], fmt="csv", newline="\r\n", ascii_only=False,
         bom=b"\xef\xbb\xbf").via("CSV rows split at U+2029; ids with spaces and numbers")
def test_load_records_reads_back_what_was_written(rows, fmt, newline, ascii_only, bom):
    dicts = [{"id": i, "text": t, "label": lab} for i, t, lab in rows]
    raw = _jsonl(dicts, newline, ascii_only) if fmt == "jsonl" else _csv(dicts, ["id", "text", "label"], newline)
    path = _tmp() / f"pool.{fmt}"
    path.write_bytes(bom + raw.encode("utf-8"))
    records = load_records(path)
    assert [(r.id, r.text, r.label) for r in records] == [(str(i).strip(), t, lab) for i, t, lab in rows]


@FUZZ
@given(rows=record_rows, data=st.data())
def test_load_records_on_damaged_files_parses_or_names_file_and_line(rows, data):
    fmt = data.draw(st.sampled_from(["jsonl", "csv", "tsv"]), label="format")
    dicts = [{"id": i, "text": t, "label": lab} for i, t, lab in rows]
    raw = (_jsonl(dicts, _newline(data), False) if fmt == "jsonl"
           else _csv(dicts, ["id", "text", "label"], _newline(data)))
    path = _tmp() / f"pool.{fmt}"
    path.write_bytes(_mutate(data, _bom(data) + raw.encode("utf-8")))
    records = _fails_clearly(lambda: load_records(path), path, file_level=FILE_LEVEL)
    if records is not None:
        assert all(r.text.strip() and r.id for r in records)
        assert len({r.id for r in records}) == len(records)


def test_load_records_examples_of_each_failure_name_the_line(tmp_path):
    cases = {
        'a.jsonl': (b'{"id": "a", "text": "x", "text": "y"}\n', "line 1: the key 'text' is given twice"),
        'b.jsonl': (b'{"text": "ok"}\n{"text": "x\x00"}\n', "line 2: not valid JSON"),
        'c.jsonl': (b'{"text": "ok"}\n\n{"text": "\xff"}\n', "line 3: not UTF-8"),
        'd.jsonl': (b'{"text": "ok", "id": [1]}\n', "line 1: 'id' must be a string or a number"),
        'e.jsonl': (b'{"text": "ok"}\r\n{"text": "ok "}\r\n', "line 2: duplicate text"),
        'f.csv': (b'id,text\n1,a\n2,\n', "line 3: empty or non-text 'text'"),
        'g.jsonl': (b'{"text": "a", "n": ' + b"9" * 5000 + b"}\n", "line 1: not valid JSON"),
    }
    for name, (raw, expected) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(NeuroshotError, match=re.escape(f"{name}: {expected}")):
            load_records(tmp_path / name)


def test_ids_are_strings_or_numbers_of_any_kind_and_objects_are_refused():
    import numpy as np

    from neuroshot.data import records_from_rows

    records = records_from_rows([{"id": np.int64(5), "text": "a"}, {"id": " 6 ", "text": "b"}, {"text": "c"}])
    assert [r.id for r in records] == ["5", "6", "3"]  # numpy ids (pandas rows) too; no id: the item number
    for bad in ([1], {"a": 1}, True):
        with pytest.raises(NeuroshotError, match=r"data: item 1: 'id' must be a string or a number"):
            records_from_rows([{"id": bad, "text": "a"}])


# --------------------------------------------------------------------------- read_annotations

CASES = {"same": str, "upper": str.upper, "lower": str.lower}
annotation_rows = st.lists(st.tuples(ids, st.sampled_from(LABELS), SPACE, st.sampled_from(sorted(CASES)), SPACE),
                           min_size=1, max_size=6, unique_by=lambda r: str(r[0]).strip())


def _annotation_file(rows: list[tuple], fmt: str, newline: str = "\n", ascii_only: bool = False,
                     bom: bytes = b"") -> bytes:
    """A filled-in label file: each label spelled with the row's case and surrounding whitespace."""
    dicts = [{"id": i, "text": f"text {n}", "label": before + CASES[case](lab) + after}
             for n, (i, lab, before, case, after) in enumerate(rows)]
    if fmt == "jsonl":
        raw = _jsonl(dicts, newline, ascii_only)
    elif fmt == "csv":
        raw = _csv(dicts, ["id", "text", "label"], newline)
    else:
        tasks = [{"id": n, "data": {"id": d["id"], "text": d["text"]},
                  "annotations": [{"was_cancelled": False,
                                   "result": [{"from_name": "label", "value": {"choices": [d["label"]]}}]}]}
                 for n, d in enumerate(dicts)]
        raw = json.dumps(tasks, ensure_ascii=ascii_only, indent=1).replace("\n", newline)
    return bom + raw.encode("utf-8")


@FUZZ
@given(rows=annotation_rows, fmt=st.sampled_from(["jsonl", "csv", "labelstudio"]),
       newline=st.sampled_from(["\n", "\r\n"]), ascii_only=st.booleans(), bom=st.sampled_from([b"", b"\xef\xbb\xbf"]))
@example(rows=[(" a ", "n e u t r a l", "\u2028", "upper", " "), (7, "ß-sharp", "", "upper", "\u0085")], fmt="jsonl",
         newline="\n", ascii_only=False, bom=b"").via("ids and labels with spaces, line separators, unicode case")
def test_read_annotations_reads_back_canonical_labels(rows, fmt, newline, ascii_only, bom):
    path = _tmp() / ("labels.json" if fmt == "labelstudio" else f"labels.{fmt}")
    path.write_bytes(_annotation_file(rows, fmt, newline, ascii_only, bom))
    assert read_annotations(path, LABELS) == {str(r[0]).strip(): r[1] for r in rows}


@FUZZ
@given(rows=annotation_rows, data=st.data())
def test_read_annotations_on_damaged_files_parses_or_names_file_and_line(rows, data):
    fmt = data.draw(st.sampled_from(["jsonl", "csv", "labelstudio"]), label="format")
    path = _tmp() / ("labels.json" if fmt == "labelstudio" else f"labels.{fmt}")
    path.write_bytes(_mutate(data, _annotation_file(rows, fmt, _newline(data), False, _bom(data))))
    # a Label Studio export is one JSON document: its errors name the line the parser stopped at, or the task
    file_level = ("is empty", "not found", "expected a Label Studio JSON export", "given twice in one object",
                  "no 'id' or", "no 'label'", "no 'id'")
    labels = _fails_clearly(lambda: read_annotations(path, LABELS), path, file_level=file_level)
    if labels is not None:
        assert set(labels.values()) <= set(LABELS)


def test_read_annotations_label_studio_with_odd_annotations_is_a_clear_error(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([{"data": {"id": "a", "text": "t"}, "annotations": 5}]), encoding="utf-8")
    with pytest.raises(NeuroshotError, match=r"export.json: task 1: 'annotations' must be a list"):
        read_annotations(path, LABELS)


# --------------------------------------------------------------------------- plan files (neuroshot annotate)

@FUZZ
@given(rows=st.lists(st.tuples(ids, texts), min_size=1, max_size=5,
                     unique_by=(lambda r: str(r[0]).strip(), lambda r: r[1].strip())), data=st.data())
def test_read_annotation_items_parses_or_names_file_and_line(rows, data):
    fmt = data.draw(st.sampled_from(["jsonl", "csv", "json"]), label="format")
    dicts = [{"id": i, "text": t, "rank": n + 1, "why": "w", "label": None} for n, (i, t) in enumerate(rows)]
    if fmt == "json":
        raw = json.dumps([{"data": d} for d in dicts], ensure_ascii=False)
    elif fmt == "jsonl":
        raw = _jsonl(dicts, _newline(data), False)
    else:
        raw = _csv(dicts, ["id", "text", "rank", "why", "label"], _newline(data))
    path = _tmp() / f"plan.{fmt}"
    clean = _bom(data) + raw.encode("utf-8")
    path.write_bytes(clean)
    assert [(it.id, it.text) for it in read_annotation_items(path)] == [(str(i).strip(), t) for i, t in rows]
    path.write_bytes(_mutate(data, clean))
    file_level = FILE_LEVEL + ("not a Label Studio task list", "duplicate item id", "given twice in one object")
    items = _fails_clearly(lambda: read_annotation_items(path), path, file_level=file_level)
    if items is not None:
        assert all(isinstance(it, AnnotationItem) for it in items)


# --------------------------------------------------------------------------- the annotation log

@FUZZ
@given(entries=st.lists(st.tuples(st.text(text_chars, min_size=1, max_size=10).filter(str.strip),
                                  st.sampled_from(LABELS), SPACE), min_size=1, max_size=6), data=st.data())
def test_annotation_log_reloads_or_names_file_and_line(entries, data):
    path = _tmp() / "labels.jsonl"
    log = AnnotationLog(path, LABELS)
    for item_id, label, space in entries:
        log.add(item_id, space + label.upper() + space)
    assert AnnotationLog(path, LABELS).labels == log.labels == {i.strip(): lab for i, lab, _ in entries}
    path.write_bytes(_mutate(data, path.read_bytes()))
    reloaded = _fails_clearly(lambda: AnnotationLog(path, LABELS), path)
    if reloaded is not None:
        assert set(reloaded.labels.values()) <= set(LABELS)
        reloaded.add("new item", LABELS[0])  # a torn tail is cut first: the file stays valid JSONL
        assert AnnotationLog(path, LABELS).labels["new item"] == LABELS[0]


# --------------------------------------------------------------------------- tasks and templates

template_text = st.lists(st.sampled_from(["a", "b ", "{", "}", ":", "!", "\n", "{text}", "{label}", "{labels}",
                                          "{unknown}", "{0}", "{}", "{text!r}", "{text:>3}", "{{", "}}",
                                          "{text.upper}", "{text[0]}"]), max_size=8).map("".join)


@FUZZ
@given(instruction=template_text, input_template=template_text, demo_template=template_text,
       labels=st.lists(st.one_of(st.text(text_chars, max_size=6), st.integers(0, 99)), min_size=0, max_size=4),
       query=st.text(text_chars, max_size=20))
@example(instruction="Pick {labels}. {", input_template="{text}", demo_template="{text} {label}",
         labels=["a", "b"], query="q").via("a stray brace")
@example(instruction="Pick", input_template="{text} {unknown}", demo_template="{text} {label}",
         labels=["a", "b"], query="q").via("an unknown field")
@example(instruction="Pick", input_template="{{text}}", demo_template="{text} {label}",
         labels=["a", "b"], query="q").via("an escaped {text} is no field")
def test_task_templates_are_checked_when_the_task_is_made(instruction, input_template, demo_template, labels, query):
    try:
        task = Task(labels=labels, instruction=instruction, input_template=input_template,
                    demo_template=demo_template)
    except NeuroshotError as exc:
        assert "\n" not in str(exc)
        return
    prompt = task.prompt(query, [])  # a task that was made always formats, whatever the query holds
    assert query in prompt
    from neuroshot import Demonstration

    assert task.verbalized[0] in task.prompt(query, [Demonstration("d", task.labels[0])])


@FUZZ
@given(data=st.data())
def test_task_files_parse_or_name_the_file(data):
    spec = {"labels": data.draw(st.lists(st.sampled_from(LABELS), min_size=2, max_size=3, unique=True)),
            "instruction": data.draw(template_text), "verbalizers": {}, "max_text_tokens": None}
    path = _tmp() / "task.json"
    path.write_bytes(_mutate(data, _bom(data) + json.dumps(spec, ensure_ascii=False).encode("utf-8")))
    task = _fails_clearly(lambda: Task.from_json(path), path, file_level=("task file",))
    if task is not None:
        assert task.prompt("x")


def test_task_file_with_unknown_field_or_wrong_types_is_one_clear_error(tmp_path):
    path = tmp_path / "task.json"
    for spec, expected in [({"labels": ["a", "b"], "instructions": "x"}, "unknown field(s) instructions"),
                           ({"labels": ["a", "b"], "verbalizers": ["x"]}, "verbalizers must map"),
                           ({"labels": ["a", "b"], "max_text_tokens": "10"}, "max_text_tokens must be"),
                           ({"labels": ["a", " "]}, "labels must be non-empty strings"),
                           ({"labels": ["a", "b"], "input_template": "{text} {"}, "input_template")]:
        path.write_text(json.dumps(spec), encoding="utf-8")
        with pytest.raises(NeuroshotError, match=re.escape(expected)):
            Task.from_json(path)


# --------------------------------------------------------------------------- the CLI

@settings(FUZZ, max_examples=12)
@given(rows=record_rows, data=st.data())
def test_cli_plan_on_fuzzed_pools_writes_a_plan_or_one_error_line(rows, data, tiny_model_dir, capsys):
    fmt = data.draw(st.sampled_from(["jsonl", "csv"]), label="format")
    dicts = [{"id": i, "text": t[:200]} for i, t, _ in rows]
    raw = _jsonl(dicts, _newline(data), False) if fmt == "jsonl" else _csv(dicts, ["id", "text"], _newline(data))
    folder = _tmp()
    pool, out = folder / f"pool.{fmt}", folder / "plan.jsonl"
    pool.write_bytes(_mutate(data, _bom(data) + raw.encode("utf-8")))
    capsys.readouterr()
    code = main(["plan", str(pool), "--labels", "A,B", "--budget", "1", "--strategy", "random", "--model",
                 str(tiny_model_dir), "--store", str(folder / "store"), "--out", str(out), "--batch-size", "4"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]
    if code == 0:
        assert out.is_file() and len(read_annotation_items(out)) == 1
    else:
        assert code == 2 and len(err) == 1 and err[0].startswith("neuroshot: error: ") and str(pool) in err[0], err
        assert not out.exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".plan.jsonl")]  # no temporary file left behind


def test_cli_annotate_and_plan_reject_bad_files_with_one_line(tmp_path, capsys, tiny_model_dir):
    plan = tmp_path / "plan.json"
    plan.write_bytes(b'[{"data": {"id": "a", "text": "t"}}, {"data": {"id": "a", "text": "u"}}]')
    labels_out = tmp_path / "labels.jsonl"
    assert main(["annotate", str(plan), "--labels", "A,B", "--out", str(labels_out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "duplicate item id 'a'" in err[0] and not labels_out.exists()
    task = tmp_path / "task.json"
    task.write_text('{"labels": ["A", "B"], "input_template": "Text: {text} {oops}"}', encoding="utf-8")
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"text": "one"}\n{"text": "two"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["plan", str(pool), "--task", str(task), "--budget", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "{oops} is not a field" in err[0] and "task.json" in err[0] and not out.exists()
