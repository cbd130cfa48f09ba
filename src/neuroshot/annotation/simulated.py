"""The simulated annotator: gold labels revealed only for the ids asked for (evaluation only)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ..data import Record
from ..errors import NeuroshotError


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
