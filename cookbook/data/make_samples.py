"""Write the cookbook's shipped samples (``cookbook/data/<set>/``) from the full sets in ``../shared/data``.

Each sample is a seeded, label-stratified draw: ``per_label`` pool items and ``test_per_label`` test
items of each label (all of a label's items when it has fewer), in the source file's order, with
the original ids and labels; texts longer than ``max_chars`` are cut at a word boundary (the
recipes read only the first 64 tokens of a clause or an abstract). Run from the repository root:

    .venv/bin/python cookbook/data/make_samples.py                  # reads ../shared/data
    .venv/bin/python cookbook/data/make_samples.py --source DIR     # another copy of the sets
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from support_ticket_routing import INTENTS as BANKING77_15  # noqa: E402  (the support recipes' 15 intents)


@dataclass(frozen=True)
class Sample:
    """How one shipped set is drawn and where it comes from."""

    name: str
    per_label: int
    test_per_label: int
    source: str
    license: str
    labels: tuple[str, ...] | None = None  # None: every label of the set
    max_chars: int | None = None


SAMPLES = (
    Sample("banking77", per_label=16, test_per_label=40, labels=BANKING77_15,
           source="Banking77 (Casanueva et al., 2020), github.com/PolyAI-LDN/task-specific-datasets (banking_data)",
           license="CC BY 4.0"),
    Sample("cuad_clause_types_top10", per_label=17, test_per_label=10, max_chars=1000,
           source="CUAD (Hendrycks et al., 2021) clauses as published in github.com/HazyResearch/legalbench "
                  "(tasks/CUAD_*, the positive clauses of the 10 largest types)",
           license="CC BY 4.0"),
    Sample("medical_abstracts", per_label=28, test_per_label=20, max_chars=700,
           source="Medical Abstracts (Schopf et al., 2022), github.com/sebischair/Medical-Abstracts-TC-Corpus (test split)",
           license="CC BY-SA 3.0"),
)


def cut(text: str, max_chars: int | None) -> str:
    """``text`` up to ``max_chars``, cut at the last space before it."""
    if max_chars is None or len(text) <= max_chars:
        return text
    return text[:max_chars].rsplit(" ", 1)[0]


def draw(rows: list[dict], labels: tuple[str, ...], per_label: int, seed: int) -> list[dict]:
    """``per_label`` rows of each label (seeded), in file order."""
    rng = random.Random(seed)
    keep: set[int] = set()
    for label in labels:
        rows_of = [i for i, r in enumerate(rows) if r["label"] == label]
        keep.update(rng.sample(rows_of, min(per_label, len(rows_of))))
    return [rows[i] for i in sorted(keep)]


def write(sample: Sample, source: Path, seed: int) -> dict:
    folder = source / sample.name
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    labels = sample.labels or tuple(card["labels"])
    out = HERE / sample.name
    out.mkdir(exist_ok=True)
    counts = {}
    for split, per_label in (("pool", sample.per_label), ("test", sample.test_per_label)):
        rows = [json.loads(line) for line in (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        chosen = draw(rows, labels, per_label, seed)
        lines = [json.dumps({"id": r["id"], "text": cut(r["text"], sample.max_chars), "label": r["label"]},
                            ensure_ascii=False) for r in chosen]
        (out / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts[split] = len(chosen)
    meta = dict(name=sample.name, source=sample.source, license=sample.license, sampled_from=f"../shared/data/{sample.name}",
                seed=seed, per_label=dict(pool=sample.per_label, test=sample.test_per_label),
                max_chars=sample.max_chars, **counts, labels=list(labels))
    (out / "card.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=HERE.parents[1].parent / "shared" / "data",
                   help="folder holding the full sets (default: ../shared/data)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for sample in SAMPLES:
        meta = write(sample, args.source, args.seed)
        size = sum((HERE / sample.name / f).stat().st_size for f in ("pool.jsonl", "test.jsonl"))
        print(f"{sample.name}: pool {meta['pool']}, test {meta['test']}, {len(meta['labels'])} labels, {size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
