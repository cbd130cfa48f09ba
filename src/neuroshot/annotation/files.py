"""Annotation in files: export a plan as JSONL, CSV or a Label Studio task file, and read the labels back."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from .._io import atomic_write
from ..data import clean_id, csv_dialect, jsonl_rows, load_records, parse_json, read_text_file
from ..errors import NeuroshotError
from .labels import AnnotationItem, _LabelSet

FORMATS = ("jsonl", "csv", "labelstudio")
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".json": "labelstudio"}


def _format_for(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise NeuroshotError(f"unknown annotation format {fmt!r}: use one of {', '.join(FORMATS)}")
        return fmt
    try:
        return _SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        raise NeuroshotError(
            f"cannot tell the annotation format of {path} from its suffix: "
            "use .jsonl, .csv or .json (Label Studio)"
        ) from None


def labelstudio_config_path(path: str | os.PathLike) -> Path:
    """Where :func:`export_for_annotation` puts the Label Studio labeling config for ``path``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.labelstudio.xml")


def _labelstudio_config(labels: _LabelSet) -> str:
    entities = {'"': "&quot;"}
    choices = "\n".join(f'    <Choice value="{escape(name, entities)}"/>' for name in labels.names)
    return (
        "<View>\n"
        '  <Text name="text" value="$text"/>\n'
        '  <Choices name="label" toName="text" choice="single">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def export_for_annotation(
    items: Sequence[AnnotationItem],
    path: str | os.PathLike,
    labels: Sequence[str],
    fmt: str | None = None,
) -> Path:
    """Write the plan for annotators (atomically) and return the path written.

    ``fmt`` is ``"jsonl"``, ``"csv"`` or ``"labelstudio"``; when None it follows the suffix
    (``.jsonl``, ``.csv``, ``.json``). JSONL and CSV rows carry an empty ``label`` to fill in.
    Label Studio gets a JSON list of tasks plus ``<stem>.labelstudio.xml``, the labeling config
    to paste into the project settings.
    """
    path = Path(path)
    fmt = _format_for(path, fmt)
    label_set = _LabelSet(labels)
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise NeuroshotError(f"duplicate item id {item.id!r} in the annotation plan")
        seen.add(item.id)
    rows = [{"id": it.id, "text": it.text, "rank": it.rank, "why": it.why} for it in items]

    if fmt == "jsonl":
        with atomic_write(path) as fh:
            fh.writelines(json.dumps({**row, "label": None}, ensure_ascii=False) + "\n" for row in rows)
    elif fmt == "csv":
        # utf-8-sig: a BOM so that Excel shows non-ASCII text correctly; read back transparently.
        with atomic_write(path, encoding="utf-8-sig") as fh:
            writer = csv.DictWriter(fh, fieldnames=["id", "text", "rank", "why", "label"])
            writer.writeheader()
            writer.writerows({**row, "label": ""} for row in rows)
    else:
        with atomic_write(labelstudio_config_path(path)) as fh:
            fh.write(_labelstudio_config(label_set))
        with atomic_write(path) as fh:
            json.dump([{"data": row} for row in rows], fh, ensure_ascii=False, indent=1)
            fh.write("\n")
    return path


def _rows_jsonl(raw: str, path: Path) -> Iterable[tuple[str, Any, Any]]:
    for n, row in jsonl_rows(raw, path):
        yield f"{path}: line {n}", row.get("id"), row.get("label")


def _rows_csv(raw: str, path: Path) -> Iterable[tuple[str, Any, Any]]:
    reader = csv.reader(io.StringIO(raw, newline=""), dialect=csv_dialect(raw))
    try:
        header = [h.strip() for h in next(reader, [])]
    except csv.Error as exc:
        raise NeuroshotError(f"{path}: line {reader.line_num}: malformed CSV header ({exc})") from None
    missing = [col for col in ("id", "label") if col not in header]
    if missing:
        raise NeuroshotError(
            f"{path}: no {' or '.join(repr(m) for m in missing)} column (columns: {', '.join(header)})"
        )
    id_col, label_col = header.index("id"), header.index("label")
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            cells = row + [""] * (len(header) - len(row))
            yield f"{path}: line {reader.line_num}", cells[id_col], cells[label_col]
    except csv.Error as exc:
        raise NeuroshotError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None


def _first_choice(result: Any) -> Any:
    """The chosen value in a Label Studio annotation result (our ``label`` control first)."""
    choices = [
        (r.get("from_name") == "label", r["value"]["choices"][0])
        for r in (result if isinstance(result, list) else [])
        if isinstance(r, dict)
        and isinstance(r.get("value"), dict)
        and isinstance(r["value"].get("choices"), list)
        and r["value"]["choices"]
    ]
    choices.sort(key=lambda c: not c[0])  # stable: 'label' control first, then in order
    return choices[0][1] if choices else None


def _rows_labelstudio(raw: str, path: Path) -> Iterable[tuple[str, Any, Any]]:
    tasks = parse_json(raw, path)
    if not isinstance(tasks, list):
        raise NeuroshotError(f"{path}: expected a Label Studio JSON export (a list of tasks)")
    for n, task in enumerate(tasks, start=1):
        where = f"{path}: task {n}"
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            raise NeuroshotError(f"{where}: no 'data' object; export from Label Studio as JSON (not JSON-MIN/CSV)")
        given = task.get("annotations") or []
        if not isinstance(given, list):
            raise NeuroshotError(f"{where}: 'annotations' must be a list, got {type(given).__name__}")
        annotations = [a for a in given if isinstance(a, dict) and not a.get("was_cancelled")]
        if not annotations:
            continue  # not annotated yet, or skipped in Label Studio
        yield where, data.get("id"), _first_choice(annotations[-1].get("result"))


def read_annotation_items(path: str | os.PathLike) -> list[AnnotationItem]:
    """Read back the items of a plan written by :func:`export_for_annotation`, in rank order."""
    path = Path(path)
    if _format_for(path, None) == "labelstudio":
        tasks = parse_json(read_text_file(path, "plan file"), path)
        if not isinstance(tasks, list) or not all(isinstance(t, dict) and isinstance(t.get("data"), dict)
                                                  for t in tasks):
            raise NeuroshotError(f"{path}: not a Label Studio task list written by neuroshot")
        rows = [(f"{path}: task {n}", task["data"]) for n, task in enumerate(tasks, start=1)]
    else:
        rows = [(f"{path}: item {n}", {"id": r.id, "text": r.text, **r.meta})
                for n, r in enumerate(load_records(path, label_field=None), start=1)]
    items = [_plan_item(where, row, n) for n, (where, row) in enumerate(rows, start=1)]
    if not items:
        raise NeuroshotError(f"{path}: no items")
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise NeuroshotError(f"{path}: duplicate item id {item.id!r}")
        seen.add(item.id)
    return sorted(items, key=lambda it: it.rank)


def _plan_item(where: str, row: dict, n: int) -> AnnotationItem:
    """One row of a plan file (id, text, optional rank and why) as an item; ``n`` is its default rank."""
    item_id, text, rank = clean_id(row.get("id"), where), row.get("text"), row.get("rank")
    if not item_id or not isinstance(text, str) or not text.strip():
        raise NeuroshotError(f"{where}: not a plan row (rows need an id and a text)")
    if rank is None or (isinstance(rank, str) and not rank.strip()):
        rank = n
    elif isinstance(rank, str) and rank.strip().isdecimal():
        rank = int(rank)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise NeuroshotError(f"{where}: rank must be a whole number >= 1, got {rank!r:.40}")
    why = row.get("why")
    return AnnotationItem(item_id, text, rank, why if isinstance(why, str) else "")


def read_annotations(path: str | os.PathLike, labels: Sequence[str]) -> dict[str, str]:
    """Read labels back from a filled-in JSONL, CSV or Label Studio JSON export: ``{id: label}``.

    Labels are checked against ``labels`` ignoring case and surrounding whitespace, and returned
    in their canonical spelling. Rows without a label are skipped (not annotated yet), as are
    Label Studio tasks without a (non-cancelled) annotation. Unknown labels, rows without an id
    and one id with two different labels raise :class:`NeuroshotError`.
    """
    path = Path(path)
    label_set = _LabelSet(labels)
    fmt = _format_for(path, None)
    raw = read_text_file(path, "annotation file")
    if not raw.strip():
        raise NeuroshotError(f"annotation file is empty: {path}")
    reader = {"jsonl": _rows_jsonl, "csv": _rows_csv, "labelstudio": _rows_labelstudio}[fmt]

    result: dict[str, str] = {}
    for where, raw_id, value in reader(raw, path):
        item_id = clean_id(raw_id, where)
        if not item_id:
            raise NeuroshotError(f"{where}: no item id")
        label = label_set.resolve(value, where)
        if label is None:
            continue
        if result.get(item_id, label) != label:
            raise NeuroshotError(
                f"{where}: item {item_id!r} is labelled both {result[item_id]!r} and {label!r}; keep one"
            )
        result[item_id] = label
    return result
