"""Probing on Ray Data: a pool of model actors writes signature-store chunks.

``probe(..., backend="ray")`` sends the texts the store does not hold yet through
``Dataset.map_batches`` with ``actors`` copies of the model (one per actor, loaded in the actor
from the spec the model was loaded with). Each batch becomes one store chunk whose name is the
hash of the batch's keys, so a batch that a restarted actor runs again finds its chunk written
and computes nothing, and a rerun after the driver was killed sends only what is missing. The
local and Ray backends share one store format; the caller reads the results from the store.

Needs ``pip install "neuroshot[ray]"``. ``address`` joins a running cluster (``"auto"`` or
``"ray://host:10001"``); without it a local one is started on this machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import NeuroshotError


def probe_on_ray(lm, task, texts: Sequence[str], settings: Mapping[str, Any], store: str | Path, *,
                 compute: Callable[..., dict], probe_args: Mapping[str, Any], demos: Sequence = (), actors: int = 2,
                 address: str | None = None, chunk_size: int = 64) -> int:
    """Probe ``texts`` on Ray into ``store`` (under ``settings``); returns how many items were probed.

    ``compute(lm, task, texts, keys, demos=..., **probe_args)`` returns a batch's store items
    (:func:`neuroshot.probing.probe_texts`); it is passed in so that this layer sits below probing.
    """
    try:
        import ray
    except ImportError:
        raise NeuroshotError('the ray backend needs Ray: pip install "neuroshot[ray]"') from None
    if lm.source is None:
        raise NeuroshotError("the ray backend loads the model in every actor: load it with "
                             "neuroshot.load_model(spec) (a model built in memory cannot be sent)")
    if not texts:
        return 0
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                 **({} if address else {"include_dashboard": False}))
    dataset = ray.data.from_items([{"text": t} for t in texts])
    probed = dataset.map_batches(
        _ProbeActor, batch_size=chunk_size, concurrency=actors, num_cpus=1, batch_format="numpy",
        fn_constructor_kwargs=dict(source=lm.source, task=task, demos=list(demos), settings=dict(settings),
                                   store=str(store), compute=compute, probe_args=dict(probe_args)))
    # Ray Data restarts a dead actor and retries its batch by default (max_restarts=-1, max_task_retries=-1)
    return int(sum(int(n) for batch in probed.iter_batches(batch_format="numpy") for n in batch["probed"]))


class _ProbeActor:
    """One model copy: probes a batch of texts and writes it as one store chunk."""

    def __init__(self, source, task, demos, settings, store, compute, probe_args) -> None:
        import torch

        from .models import load_model
        from .store import SignatureStore

        torch.set_num_threads(1)
        self.lm = load_model(source[0], adapter=source[1])
        self.task, self.demos, self.compute, self.args = task, demos, compute, probe_args
        self.store = SignatureStore(store, settings)

    def __call__(self, batch: dict) -> dict:
        from .store import text_key

        texts = [str(t) for t in batch["text"]]
        keys = [text_key(t) for t in texts]
        name = "ray-" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]
        if self.store.chunk_path(name).exists():  # a retried batch whose chunk was written before
            return {"probed": [0]}
        results = self.compute(self.lm, self.task, texts, keys, demos=self.demos, **self.args)
        self.store.put(results, name=name)
        return {"probed": [len(results)]}
