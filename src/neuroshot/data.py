"""Reading pools of texts (JSONL, CSV, Parquet, or a ``datasets`` object) into validated records."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
        rows = _read_parquet(path)
    else:
        raw = read_text_file(path, "data file")
        if not raw.strip():
            raise NeuroshotError(f"data file is empty: {path}")
        is_csv = path.suffix.lower() in {".csv", ".tsv"}
        rows = _read_csv(raw, path) if is_csv else [row for _, row in jsonl_rows(raw, path)]
    return records_from_rows(rows, source=str(path), text_field=text_field, id_field=id_field,
                             label_field=label_field)


def records_from_rows(
    rows: Iterable[Mapping[str, Any]],
    *,
    source: str = "data",
    text_field: str = "text",
    id_field: str = "id",
    label_field: str | None = "label",
) -> list[Record]:
    """Validate dict rows (from a file, a list, or a ``datasets.Dataset``) into records."""
    records: list[Record] = []
    seen_text: dict[str, str] = {}
    seen_id: set[str] = set()
    for n, row in enumerate(rows, start=1):
        if text_field not in row:
            raise NeuroshotError(f"{source}: item {n} has no '{text_field}' field (fields: {', '.join(map(str, row))})")
        text = row[text_field]
        if not isinstance(text, str) or not text.strip():
            raise NeuroshotError(f"{source}: item {n} has an empty or non-text '{text_field}'")
        item_id = str(row[id_field]) if row.get(id_field) not in (None, "") else str(n)
        if item_id in seen_id:
            raise NeuroshotError(f"{source}: duplicate id '{item_id}' (item {n})")
        key = text.strip()
        if key in seen_text:
            raise NeuroshotError(f"{source}: duplicate text in items '{seen_text[key]}' and '{item_id}': remove duplicates first")
        seen_id.add(item_id)
        seen_text[key] = item_id
        label = row.get(label_field) if label_field else None
        meta = {k: v for k, v in row.items() if k not in {text_field, id_field, label_field}}
        records.append(Record(item_id, text, None if label in (None, "") else str(label), meta))
    if not records:
        raise NeuroshotError(f"{source}: no items")
    return records


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
    """A file's UTF-8 text (BOM tolerated), or a one-line error saying what is wrong with it."""
    if not path.is_file():
        raise NeuroshotError(f"{what} not found: {path}")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NeuroshotError(f"{path} is not UTF-8 text (byte {exc.start}): re-save it as UTF-8") from None


def jsonl_rows(raw: str, path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL text."""
    for n, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise NeuroshotError(f"{path}: line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise NeuroshotError(f"{path}: line {n}: each line must be a JSON object")
        yield n, row


def csv_dialect(raw: str) -> type[csv.Dialect] | csv.Dialect:
    """The dialect of a CSV text from its header line (spreadsheets in some locales save with ';' or
    tabs); plain ``excel`` when the header cannot tell, e.g. a single column."""
    try:
        return csv.Sniffer().sniff(raw.splitlines()[0], delimiters=",;\t")
    except csv.Error:
        return csv.excel


def _read_csv(raw: str, path: Path) -> list[dict]:
    try:
        return list(csv.DictReader(raw.splitlines(), dialect=csv_dialect(raw)))
    except csv.Error as exc:
        raise NeuroshotError(f"{path}: cannot read as CSV ({exc})") from None
