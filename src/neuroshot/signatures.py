"""Sparse neuron signatures and the task-critical neurons aggregated from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from ._validation import check_in


@dataclass
class Signatures:
    """Per item, the top-k neurons of each layer by |attribution| (CSR: ``indptr``, ``neurons``, ``values``).

    ``neurons`` holds flat ids ``layer * d_ff + index``. Over a multi-token answer span the top-k is
    taken over (position, neuron) pairs per layer, as in NeuFS, and a neuron found at several
    positions keeps its strongest value; so an item has at most ``k`` (at least ``ceil(k / span)``)
    neurons per layer.
    """

    indptr: np.ndarray
    neurons: np.ndarray
    values: np.ndarray
    n_layers: int
    d_ff: int

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def n_neurons(self) -> int:
        return self.n_layers * self.d_ff

    def item(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat neuron ids and attribution values of item ``i``."""
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return self.neurons[lo:hi], self.values[lo:hi]

    def sizes(self) -> np.ndarray:
        """Number of unique neurons per item (NeuFS's consensus count Q)."""
        return np.diff(self.indptr)

    def to_csr(self, binary: bool = False) -> sparse.csr_matrix:
        """``[N, n_layers * d_ff]`` sparse matrix of values (or ones)."""
        data = np.ones_like(self.values) if binary else self.values
        return sparse.csr_matrix((data, self.neurons, self.indptr), shape=(len(self), self.n_neurons))

    def split(self, flat_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(layer, neuron index) of flat ids."""
        return np.divmod(np.asarray(flat_ids), self.d_ff)

    def subset(self, rows: Sequence[int]) -> Signatures:
        """The signatures of ``rows``, in that order."""
        parts = [self.item(i) for i in rows]
        return Signatures.from_items([p[0] for p in parts], [p[1] for p in parts], self.n_layers, self.d_ff)

    def bytes_per_item(self) -> float:
        return (self.neurons.nbytes + self.values.nbytes + self.indptr.nbytes) / max(1, len(self))

    @classmethod
    def from_items(cls, neurons: Sequence[np.ndarray], values: Sequence[np.ndarray], n_layers: int, d_ff: int) -> Signatures:
        indptr = np.cumsum([0, *map(len, neurons)], dtype=np.int64)
        cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if len(xs) else np.zeros(0, dt))
        return cls(indptr, cat(list(neurons), np.int32), cat(list(values), np.float32), n_layers, d_ff)

    @classmethod
    def concat(cls, parts: Sequence[Signatures]) -> Signatures:
        items = [s.item(i) for s in parts for i in range(len(s))]
        return cls.from_items([n for n, _ in items], [v for _, v in items], parts[0].n_layers, parts[0].d_ff)


def top_k_signatures(values: torch.Tensor, k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Sparse top-k per layer of a ``[B, L, S, d_ff]`` attribution batch (masked positions are zero)."""
    batch, n_layers, width, d_ff = values.shape
    flat = values.reshape(batch, n_layers, width * d_ff)
    k = min(k, width * d_ff)
    top = flat.abs().topk(k, dim=-1).indices  # [B, L, k] over (position, neuron)
    vals = flat.gather(-1, top)
    neuron = top % d_ff + torch.arange(n_layers, device=values.device)[None, :, None] * d_ff
    neurons, out_values = [], []
    for b in range(batch):
        ids, v = neuron[b].flatten().cpu().numpy(), vals[b].flatten().cpu().numpy()
        keep = v != 0
        ids, v = ids[keep], v[keep]
        order = np.argsort(-np.abs(v), kind="stable")
        uniq, first = np.unique(ids[order], return_index=True)  # strongest value per neuron
        neurons.append(uniq.astype(np.int32))
        out_values.append(v[order][first].astype(np.float32))
    return neurons, out_values


@dataclass
class CriticalNeurons:
    """The task-critical neurons: the top fraction of all neurons by aggregated |attribution| over a pool."""

    ids: np.ndarray  # flat ids, strongest first
    weights: np.ndarray  # aggregated |attribution|, normalised to sum 1
    n_layers: int
    d_ff: int
    fraction: float = 0.01  # the settings they were chosen with
    by: str = "attribution"

    def __len__(self) -> int:
        return len(self.ids)

    def per_layer_counts(self) -> np.ndarray:
        """How many critical neurons each layer holds."""
        return np.bincount(self.ids // self.d_ff, minlength=self.n_layers)

    def restrict(self, signatures: Signatures) -> sparse.csr_matrix:
        """``[N, len(self)]`` matrix of the signatures' values on the critical neurons (column order = ``ids``)."""
        return signatures.to_csr()[:, self.ids].tocsr()


def critical_neurons(signatures: Signatures, fraction: float = 0.01) -> CriticalNeurons:
    """Aggregate the pool's signatures (sum of |attribution| per neuron) and keep the top ``fraction``."""
    check_in("critical fraction", fraction, 0.0, 1.0, low_open=True)
    totals = np.bincount(signatures.neurons, weights=np.abs(signatures.values), minlength=signatures.n_neurons)
    n = max(1, min(int(round(fraction * signatures.n_neurons)), int((totals > 0).sum())))
    ids = np.argsort(-totals, kind="stable")[:n]
    weights = totals[ids] / max(totals[ids].sum(), 1e-12)
    return CriticalNeurons(ids.astype(np.int64), weights, signatures.n_layers, signatures.d_ff, fraction)
