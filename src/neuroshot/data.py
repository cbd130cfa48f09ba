"""Reading pools of texts (JSONL, CSV, Parquet, or a ``datasets`` object) into validated records."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Number
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import NeuroshotError


@dataclass(frozen=True)
class Record:
    """One item of a pool: its id, its text, and (for evaluation only) a gold label."""

    id: str
    text: str
    label: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Annotator(Protocol):
    """Who gives labels: called with the ids of the items to label, returns ``{id: label}`` for them.

    The one contract of every labelling step (active rounds, vote-k's stage 1, the integrations):
    a :class:`~neuroshot.annotation.SimulatedAnnotator` for evaluation, or any function that asks
    a person. It is called with exactly the items chosen, so no other label is ever revealed.
    """

    def __call__(self, ids: Sequence[str], /) -> Mapping[str, str]: ...


def load_records(
    path: str | Path,
    *,
    text_field: str = "text",
    id_field: str = "id",
    label_field: str | None = "label",
) -> list[Record]:
    """Load a JSONL, CSV or Parquet file into records, with a clear error for anything malformed.

    Items without an id get ``"<line number>"``. The label column is read only if present; a
    selector must not look at it before the item is annotated (see ``SimulatedAnnotator``).
    """
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        rows = [(f"{path}: row {n}", row) for n, row in enumerate(_read_parquet(path), start=1)]
    else:
        raw = read_text_file(path, "data file")
        if not raw.strip():
            raise NeuroshotError(f"data file is empty: {path}")
        is_csv = path.suffix.lower() in {".csv", ".tsv"}
        rows = _read_csv(raw, path) if is_csv else [(f"{path}: line {n}", row) for n, row in jsonl_rows(raw, path)]
    return _records(rows, str(path), text_field=text_field, id_field=id_field, label_field=label_field)


def records_from_rows(
    rows: Iterable[Mapping[str, Any]],
    *,
    source: str = "data",
    text_field: str = "text",
    id_field: str = "id",
    label_field: str | None = "label",
) -> list[Record]:
    """Validate dict rows (from a file, a list, or a ``datasets.Dataset``) into records."""
    return _records(((f"{source}: item {n}", row) for n, row in enumerate(rows, start=1)), source,
                    text_field=text_field, id_field=id_field, label_field=label_field)


def _records(rows: Iterable[tuple[str, Any]], source: str, *, text_field: str, id_field: str,
             label_field: str | None) -> list[Record]:
    """Records of ``(where, row)`` pairs; ``where`` names the row in errors (``file: line 3``)."""
    records: list[Record] = []
    seen_text: dict[str, str] = {}
    seen_id: set[str] = set()
    for n, (where, row) in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise NeuroshotError(f"{where}: expected an object with a '{text_field}' field, got {type(row).__name__}")
        if text_field not in row:
            raise NeuroshotError(f"{where}: no '{text_field}' field (fields: {', '.join(map(str, row))})")
        text = row[text_field]
        if not isinstance(text, str) or not text.strip():
            raise NeuroshotError(f"{where}: empty or non-text '{text_field}'")
        item_id = clean_id(row.get(id_field), where, id_field) or str(n)
        if item_id in seen_id:
            raise NeuroshotError(f"{where}: duplicate id '{item_id}'")
        key = text.strip()
        if key in seen_text:
            raise NeuroshotError(f"{where}: duplicate text in items '{seen_text[key]}' and '{item_id}': remove duplicates first")
        seen_id.add(item_id)
        seen_text[key] = item_id
        label = row.get(label_field) if label_field else None
        if isinstance(label, (dict, list)):
            raise NeuroshotError(f"{where}: '{label_field}' must be a label name, got {type(label).__name__}")
        meta = {k: v for k, v in row.items() if k not in {text_field, id_field, label_field}}
        records.append(Record(item_id, text, None if label is None or not str(label).strip() else str(label), meta))
    if not records:
        raise NeuroshotError(f"{source}: no items")
    return records


def clean_id(value: Any, where: str, id_field: str = "id") -> str:
    """An item's id as text, surrounding whitespace removed ("" when absent); numbers are written as given.

    Data files and label files are read with this one rule, so an id survives the round trip
    through a spreadsheet or Label Studio.
    """
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, Number)):  # Number: numpy ints from pandas too
        raise NeuroshotError(f"{where}: '{id_field}' must be a string or a number, got {type(value).__name__} {value!r:.40}")
    return str(value).strip()


@dataclass(frozen=True)
class RecordSplit:
    """A pool to select from, a validation slice held out of it (never selectable), and test items."""

    pool: list[Record]
    validation: list[Record]
    test: list[Record]


def split_records(pool: Sequence[Record], test: Sequence[Record], *, validation: int = 0,
                  pool_size: int | None = None, test_size: int | None = None, seed: int = 0) -> RecordSplit:
    """One seeded permutation of ``pool``: its first ``validation`` items are the validation slice, the
    next ``pool_size`` (default: all) the pool to select from; ``test_size`` test items are a seeded
    sample kept in file order (default: all). Recipes and benchmarks split with this, so the same
    arguments give the same items everywhere."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shuffled = [pool[i] for i in rng.permutation(len(pool))]
    held, rest = shuffled[:validation], shuffled[validation:]
    rest = rest[:pool_size] if pool_size else rest
    if test_size and test_size < len(test):
        test = [test[i] for i in sorted(rng.choice(len(test), size=test_size, replace=False))]
    return RecordSplit(rest, held, list(test))


def label_set(records: Sequence[Record]) -> list[str]:
    """The sorted distinct gold labels of ``records`` (for evaluation and the demo)."""
    return sorted({r.label for r in records if r.label is not None})


def _read_parquet(path: Path) -> list[dict]:
    """A Parquet file's rows (needs pyarrow, which the ray extra brings)."""
    if not path.is_file():
        raise NeuroshotError(f"data file not found: {path}")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise NeuroshotError(f'reading {path.name} needs pyarrow: pip install "neuroshot[ray]"') from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError subclasses
        raise NeuroshotError(f"{path} is not a readable Parquet file: {exc}") from None


def read_text_file(path: Path, what: str) -> str:
    """A file's UTF-8 text (BOM tolerated), or a one-line error saying what is wrong with it and where."""
    if not path.is_file():
        raise NeuroshotError(f"{what} not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise NeuroshotError(f"{path}: line {line}: not UTF-8 text (byte {exc.start}): re-save it as UTF-8") from None


def split_lines(raw: str) -> list[str]:
    """The lines of a text file, split at ``\\n``, ``\\r\\n`` or ``\\r`` only.

    Not ``str.splitlines``: it also splits at U+0085, U+2028, U+2029 and other characters that
    JSON strings may hold unescaped (``json.dumps(..., ensure_ascii=False)`` writes them as is).
    """
    lines = _LINE_END.split(raw)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


_LINE_END = re.compile(r"\r\n|\r|\n")


def jsonl_rows(raw: str, path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL text."""
    for n, line in enumerate(split_lines(raw), start=1):
        if not line.strip():
            continue
        row = parse_json(line, path, line=n)
        if not isinstance(row, dict):
            raise NeuroshotError(f"{path}: line {n}: each line must be a JSON object")
        yield n, row


def parse_json(text: str, path: str | Path, *, line: int | None = None) -> Any:
    """``text`` parsed as JSON, or an error naming ``path`` and the line (``line``, else the parser's).

    A key given twice in one object is an error: which of the two values was meant is a guess.
    """
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise NeuroshotError(f"{path}: line {line or exc.lineno}: not valid JSON ({exc.msg})") from None
    except _DuplicateKey as exc:
        where = f"{path}: line {line}" if line else str(path)
        raise NeuroshotError(f"{where}: the key {exc.args[0]!r} is given twice in one object") from None
    except (ValueError, RecursionError) as exc:  # e.g. integers of over 4300 digits, nesting beyond the stack
        where = f"{path}: line {line}" if line else str(path)
        raise NeuroshotError(f"{where}: not valid JSON ({str(exc) or type(exc).__name__})") from None


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def csv_dialect(raw: str) -> type[csv.Dialect]:
    """The dialect of a CSV text: ``excel`` with the delimiter of its header line (spreadsheets in some
    locales save with ';' or tabs), ',' when the header cannot tell, e.g. a single column.

    Only the delimiter is taken from ``csv.Sniffer``: from a header without quotes it also guesses
    ``doublequote=False``, which would read every ``""`` inside a quoted text as two quotes.
    """
    try:
        delimiter = csv.Sniffer().sniff(split_lines(raw)[0], delimiters=",;\t").delimiter
    except csv.Error:
        return csv.excel
    return type("sniffed", (csv.excel,), {"delimiter": delimiter})


def _read_csv(raw: str, path: Path) -> list[tuple[str, dict]]:
    """``(where, row)`` per data row; ``where`` names the line the row ends on."""
    reader = csv.DictReader(io.StringIO(raw, newline=""), dialect=csv_dialect(raw))
    try:
        return [(f"{path}: line {reader.line_num}", row) for row in reader]
    except csv.Error as exc:
        raise NeuroshotError(f"{path}: line {reader.line_num}: cannot read as CSV ({exc})") from None
