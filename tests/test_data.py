"""The one pool / validation / test split that recipes and benchmarks share."""

from __future__ import annotations

from neuroshot.data import Record, split_records

POOL = [Record(f"p{i}", f"pool text {i}", "ab"[i % 2]) for i in range(30)]
TEST = [Record(f"t{i}", f"test text {i}", "ab"[i % 2]) for i in range(20)]


def test_split_is_seeded_disjoint_and_keeps_test_order():
    split = split_records(POOL, TEST, validation=5, pool_size=10, test_size=8, seed=3)
    assert len(split.validation) == 5 and len(split.pool) == 10 and len(split.test) == 8
    assert not {r.id for r in split.validation} & {r.id for r in split.pool}
    assert [r.id for r in split.test] == sorted((r.id for r in split.test), key=lambda i: int(i[1:]))
    again = split_records(POOL, TEST, validation=5, pool_size=10, test_size=8, seed=3)
    assert again == split
    other = split_records(POOL, TEST, validation=5, pool_size=10, test_size=8, seed=4)
    assert [r.id for r in other.pool] != [r.id for r in split.pool]


def test_pool_size_takes_a_prefix_of_the_same_permutation():
    small = split_records(POOL, TEST, validation=5, pool_size=10)
    full = split_records(POOL, TEST, validation=5)
    assert full.validation == small.validation and full.pool[:10] == small.pool and len(full.pool) == 25
    assert full.test == TEST


def test_atomic_write_gives_the_permissions_a_plain_open_would(tmp_path):
    from neuroshot._io import atomic_write

    with atomic_write(tmp_path / "atomic.txt") as fh:
        fh.write("x")
    (tmp_path / "plain.txt").write_text("x")
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_load_records_reads_jsonl_csv_and_parquet_alike(tmp_path):
    import csv
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    import pytest

    from neuroshot import NeuroshotError
    from neuroshot.data import load_records

    rows = [{"id": "a", "text": "first text", "label": "x"}, {"id": "b", "text": "2024", "label": "y"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open(tmp_path / "p.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["id", "text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    loaded = [load_records(tmp_path / f"p.{suffix}") for suffix in ("jsonl", "csv", "parquet")]
    assert loaded[0] == loaded[1] == loaded[2] == [Record("a", "first text", "x"), Record("b", "2024", "y")]
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(NeuroshotError, match="Parquet"):
        load_records(tmp_path / "bad.parquet")
    with pytest.raises(NeuroshotError, match="not found"):
        load_records(tmp_path / "missing.parquet")


def test_load_records_reads_a_one_column_csv_and_explains_an_unreadable_one(tmp_path):
    import pytest

    from neuroshot import NeuroshotError
    from neuroshot.data import load_records

    (tmp_path / "texts.csv").write_text("text\nwhere is my parcel\nrefund please\n")
    assert [r.text for r in load_records(tmp_path / "texts.csv", label_field=None)] == ["where is my parcel",
                                                                                        "refund please"]
    (tmp_path / "long.csv").write_text('text\n"' + "a" * 200_000 + '"\n')  # over csv's field size limit
    with pytest.raises(NeuroshotError, match="long.csv: line 1: cannot read as CSV"):
        load_records(tmp_path / "long.csv")
