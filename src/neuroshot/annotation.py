"""Getting labels from people: export a plan, read labels back, and a crash-safe terminal session.

The flow behind ``neuroshot annotate``:

* :func:`export_for_annotation` writes the planned items as JSONL, CSV or a Label Studio task
  file (plus its labeling config), for annotation in a spreadsheet or in Label Studio;
* :func:`read_annotations` reads the filled-in file back, checking every label against the
  label set (case and surrounding spaces do not matter; the canonical spelling is returned);
* :class:`AnnotationLog` and :func:`run_annotation_session` label items in the terminal, one
  fsync'ed JSONL line per label, so a session killed at any moment keeps every label given
  and a rerun continues where it stopped;
* :class:`SimulatedAnnotator` plays the annotator from gold labels, for evaluation only.

This module is deliberately light: no torch, no transformers.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from ._io import atomic_write
from .data import Record, jsonl_rows, read_text_file
from .errors import NeuroshotError

__all__ = [
    "AnnotationItem",
    "AnnotationLog",
    "SimulatedAnnotator",
    "export_for_annotation",
    "labelstudio_config_path",
    "read_annotation_items",
    "read_annotations",
    "run_annotation_session",
]

FORMATS = ("jsonl", "csv", "labelstudio")
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".json": "labelstudio"}


@dataclass(frozen=True)
class AnnotationItem:
    """One planned item shown to an annotator.

    ``rank`` is the 1-based position in the plan; ``why`` is a one-line reason it was chosen.
    """

    id: str
    text: str
    rank: int
    why: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"AnnotationItem.id must be a non-empty string, got {self.id!r}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"AnnotationItem.rank must be an integer >= 1, got {self.rank!r}")


# --------------------------------------------------------------------------------------------
# Label set: validation and canonical spelling
# --------------------------------------------------------------------------------------------


class _LabelSet:
    """The allowed labels, matched case-insensitively with surrounding whitespace ignored."""

    def __init__(self, labels: Iterable[str]) -> None:
        if isinstance(labels, str):
            raise TypeError("labels must be a sequence of label names, not a single string")
        self.names: tuple[str, ...] = ()
        self._by_key: dict[str, str] = {}
        names = []
        for raw in labels:
            if not isinstance(raw, str) or not raw.strip():
                raise NeuroshotError(f"labels must be non-empty strings, got {raw!r}")
            name = raw.strip()
            key = name.casefold()
            if key in self._by_key:
                raise NeuroshotError(
                    f"label {name!r} is given twice (labels are matched ignoring case): {', '.join(names)}"
                )
            self._by_key[key] = name
            names.append(name)
        if not names:
            raise NeuroshotError("no labels given: pass the label set, e.g. --labels positive,negative")
        self.names = tuple(names)

    def __str__(self) -> str:
        return ", ".join(self.names)

    def lookup(self, value: Any) -> str | None:
        """The canonical spelling of ``value``, or None if it is not a label."""
        if isinstance(value, (dict, list, bool)) or value is None:
            return None
        return self._by_key.get(str(value).strip().casefold())

    def resolve(self, value: Any, where: str) -> str | None:
        """Canonical label for ``value``; None if it is empty (not annotated yet); else an error."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        name = self.lookup(value)
        if name is None:
            raise NeuroshotError(f"{where}: unknown label {value!r}; allowed labels: {self}")
        return name


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


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
            for row in rows:
                fh.write(json.dumps({**row, "label": None}, ensure_ascii=False) + "\n")
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


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------


def _rows_jsonl(raw: str, path: Path) -> Iterable[tuple[str, Any, Any]]:
    for n, row in jsonl_rows(raw, path):
        yield f"{path}: line {n}", row.get("id"), row.get("label")


def _rows_csv(raw: str, path: Path) -> Iterable[tuple[str, Any, Any]]:
    try:  # spreadsheets in some locales save with ';' or tabs
        dialect: Any = csv.Sniffer().sniff(raw.splitlines()[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(raw, newline=""), dialect=dialect)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        header = []
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
    try:
        tasks = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise NeuroshotError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(tasks, list):
        raise NeuroshotError(f"{path}: expected a Label Studio JSON export (a list of tasks)")
    for n, task in enumerate(tasks, start=1):
        where = f"{path}: task {n}"
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            raise NeuroshotError(f"{where}: no 'data' object; export from Label Studio as JSON (not JSON-MIN/CSV)")
        annotations = [
            a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")
        ]
        if not annotations:
            continue  # not annotated yet, or skipped in Label Studio
        yield where, data.get("id"), _first_choice(annotations[-1].get("result"))


def read_annotation_items(path: str | os.PathLike) -> list[AnnotationItem]:
    """Read back the items of a plan written by :func:`export_for_annotation`, in rank order."""
    path = Path(path)
    if _format_for(path, None) == "labelstudio":
        raw = read_text_file(path, "plan file")
        try:
            rows = [task["data"] for task in json.loads(raw)]
        except (json.JSONDecodeError, TypeError, KeyError):
            raise NeuroshotError(f"{path}: not a Label Studio task list written by neuroshot") from None
    else:
        from .data import load_records

        rows = [{"id": r.id, "text": r.text, **r.meta} for r in load_records(path, label_field=None)]
    try:
        items = [AnnotationItem(str(r["id"]), str(r["text"]), int(r.get("rank") or n), str(r.get("why") or ""))
                 for n, r in enumerate(rows, start=1)]
    except (KeyError, ValueError) as exc:
        raise NeuroshotError(f"{path}: not a plan file (rows need id and text): {exc}") from None
    return sorted(items, key=lambda it: it.rank)


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
    for where, item_id, value in reader(raw, path):
        if item_id is None or (isinstance(item_id, str) and not item_id.strip()):
            raise NeuroshotError(f"{where}: no item id")
        label = label_set.resolve(value, where)
        if label is None:
            continue
        item_id = str(item_id).strip()
        if result.get(item_id, label) != label:
            raise NeuroshotError(
                f"{where}: item {item_id!r} is labelled both {result[item_id]!r} and {label!r}; keep one"
            )
        result[item_id] = label
    return result


# --------------------------------------------------------------------------------------------
# Crash-safe log of labels given in the terminal
# --------------------------------------------------------------------------------------------


def _split_tail(data: bytes) -> tuple[int, bytes]:
    """Split file bytes into the end of the last complete line and an unterminated tail."""
    end = data.rfind(b"\n") + 1
    return end, data[end:]


def _parse_entry(line: bytes) -> dict | None:
    """A log line as a dict with ``id`` and ``label``, or None if it is not one."""
    try:
        entry = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(entry, dict) or not entry.get("id") or "label" not in entry:
        return None
    return entry


def _fsync_dir(path: Path) -> None:
    """Make a newly created file's directory entry durable (POSIX; a no-op elsewhere)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AnnotationLog:
    """Append-only JSONL of labels given, one fsync'ed line ``{"id", "label", "time"}`` per label.

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
        tail_entry = _parse_entry(tail) if tail.strip() else None
        if tail_entry is not None:  # complete entry, only its newline is missing
            lines.append(tail)
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            entry = _parse_entry(line)
            where = f"{self.path}: line {n}"
            if entry is None:
                raise NeuroshotError(f"{where}: not a label entry ({line[:60]!r}); fix or delete that line")
            label = self._label_set.resolve(entry["label"], where)
            if label is not None:
                self._labels[str(entry["id"])] = label

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
        if not isinstance(item_id, str) or not item_id:
            raise ValueError(f"item_id must be a non-empty string, got {item_id!r}")
        name = self._label_set.resolve(label, f"label for item {item_id!r}")
        if name is None:
            raise NeuroshotError(f"empty label for item {item_id!r}; allowed labels: {self._label_set}")
        if not self._tail_checked:
            self._repair_tail()
        entry = {"id": item_id, "label": name, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
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


# --------------------------------------------------------------------------------------------
# Terminal session
# --------------------------------------------------------------------------------------------

_SKIP, _QUIT = "s", "q"


def _parse_answer(answer: str, labels: _LabelSet, numbered: bool) -> tuple[str | None, str]:
    """Interpret one typed answer: ``(label, "")``, ``(None, "skip"|"quit")`` or ``(None, why)``."""
    text = answer.strip()
    key = text.casefold()
    if not text:
        return None, "please type a label" + (" number or name" if numbered else " name")
    if key == _SKIP:
        return None, "skip"
    if key == _QUIT:
        return None, "quit"
    if numbered and text.isdigit():
        k = int(text)
        if 1 <= k <= len(labels.names):
            return labels.names[k - 1], ""
        return None, f"no label number {k}: choose 1-{len(labels.names)}"
    exact = labels.lookup(text)
    if exact is not None:
        return exact, ""
    matches = [name for name in labels.names if name.casefold().startswith(key)]
    if len(matches) == 1:
        return matches[0], ""
    if matches:
        return None, f"{text!r} could be {', '.join(matches)}: type more of the name"
    return None, f"unknown label {text!r}; allowed labels: {labels}"


def run_annotation_session(
    items: Sequence[AnnotationItem],
    labels: Sequence[str],
    log: AnnotationLog,
    *,
    input_fn: Callable[[str], str] = input,
    print_fn: Callable[..., Any] = print,
) -> int:
    """Label the items not yet in ``log`` in the terminal, in rank order; return how many were given.

    Answer with a label number or name (ignoring case; a unique prefix is enough), ``s`` to skip
    or ``q`` to quit; Ctrl-C / Ctrl-D also end the session. When a label is itself a number,
    labels are chosen by name only. Each label is in the log (on disk) before the next item shows.
    """
    label_set = _LabelSet(labels)
    if {n.casefold() for n in label_set.names} != {n.casefold() for n in log.allowed_labels}:
        raise NeuroshotError(
            f"the session labels ({label_set}) differ from the log's ({', '.join(log.allowed_labels)})"
        )
    numbered = not any(name.isdigit() for name in label_set.names)
    if numbered:
        menu = "\n".join(f"  {k}) {name}" for k, name in enumerate(label_set.names, start=1))
        prompt = "label (number or name; s = skip, q = quit): "
    else:
        menu = "  " + " | ".join(label_set.names)
        prompt = "label (name; s = skip, q = quit): "

    plan = sorted(items, key=lambda it: it.rank)
    total = len(plan)
    given = 0
    try:
        for item in plan:
            if item.id in log:
                continue
            print_fn(f"\n[{item.rank}/{total}] {item.why}".rstrip())
            print_fn(item.text)
            print_fn(menu)
            label, note = _parse_answer(input_fn(prompt), label_set, numbered)
            while label is None and note not in ("skip", "quit"):
                print_fn(note)
                label, note = _parse_answer(input_fn(prompt), label_set, numbered)
            if note == "quit":
                break
            if label is not None:
                log.add(item.id, label)
                given += 1
    except (EOFError, KeyboardInterrupt):
        print_fn("")  # end the prompt's line; every label given is already on disk
    done = sum(1 for it in plan if it.id in log)
    print_fn(f"{given} labelled now; {done} of {total} labelled, {total - done} remaining (saved in {log.path})")
    return given


# --------------------------------------------------------------------------------------------
# Simulated annotator (evaluation only)
# --------------------------------------------------------------------------------------------


class SimulatedAnnotator:
    """Plays the annotator from gold labels, revealing a label only when its id is requested.

    For evaluation only. The gold mapping is private; :attr:`revealed` holds the ids asked for,
    so an evaluation can check that a selector never saw more labels than its budget.
    """

    def __init__(self, gold: Mapping[str, str]) -> None:
        self._gold: dict[str, str] = {str(k): v for k, v in gold.items()}
        self.revealed: set[str] = set()

    @classmethod
    def from_records(cls, records: Iterable[Record]) -> SimulatedAnnotator:
        """Build from records' gold ``label``; every record must have one."""
        gold: dict[str, str] = {}
        for record in records:
            if record.label is None:
                raise NeuroshotError(
                    f"item {record.id!r} has no gold label: simulated annotation needs a labelled pool"
                )
            gold[record.id] = record.label
        return cls(gold)

    def annotate(self, ids: Sequence[str]) -> dict[str, str]:
        """Reveal the gold labels of ``ids`` (and only those), recording them in :attr:`revealed`."""
        if isinstance(ids, str):
            raise TypeError("annotate() takes a sequence of ids, not a single string")
        unknown = [i for i in ids if i not in self._gold]
        if unknown:
            raise NeuroshotError(f"no gold label for item(s) {', '.join(map(repr, unknown[:5]))}")
        self.revealed.update(ids)
        return {i: self._gold[i] for i in ids}

    __call__ = annotate

    def __len__(self) -> int:
        return len(self._gold)

    def __repr__(self) -> str:
        return f"SimulatedAnnotator({len(self._gold)} items, {len(self.revealed)} revealed)"
