"""Probing on Ray Data: a pool of model actors writes signature-store chunks.

The backend of ``probe(..., backend="ray")`` (its parameters: :func:`neuroshot.probing.probe`). Each
batch becomes one store chunk whose name is the hash of the batch's keys, so a batch that a
restarted actor runs again finds its chunk written and computes nothing, and a rerun after the
driver was killed probes only what is missing. The local and Ray backends share one store format;
the caller reads the results from the store.

Needs ``pip install "neuroshot[ray]"``. ``address`` joins a running cluster (``"auto"`` or
``"ray://host:10001"``); without it a local one is started on this machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import NeuroshotError

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


def probe_on_ray(lm, task, texts: Sequence[str] | None, settings: Mapping[str, Any], store: str | Path, *,
                 compute: Callable[..., dict], probe_args: Mapping[str, Any], demos: Sequence = (), actors: int = 2,
                 address: str | None = None, chunk_size: int = 64, source: str | Path | None = None,
                 text_field: str = "text") -> int:
    """Probe ``texts`` (or the pool file ``source``) on Ray into ``store``; returns how many items were probed.

    ``compute(lm, task, texts, keys, demos=..., **probe_args)`` returns a batch's store items
    (:func:`neuroshot.probing.probe_texts`); it is passed in so that this layer sits below probing.
    """
    ray = _ray()
    if lm.source is None:
        raise NeuroshotError("the ray backend loads the model in every actor: load it with "
                             "neuroshot.load_model(spec) (a model built in memory cannot be sent)")
    if source is None and not texts:
        return 0
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                 **({} if address else {"include_dashboard": False}))
    if source is not None:
        # read and split before the actors take every CPU (these steps run as tasks that need one too);
        # split because a file is read as one block and a block goes to one actor
        dataset = read_pool(source, text_field).materialize()
        dataset = dataset.repartition(min(-(-dataset.count() // chunk_size), 8 * actors)).materialize()
    else:
        dataset = ray.data.from_items([{"text": t} for t in texts])
    probed = dataset.map_batches(
        _ProbeActor, batch_size=chunk_size, concurrency=actors, num_cpus=1, batch_format="numpy",
        fn_constructor_kwargs=dict(source=lm.source, task=task, demos=list(demos), settings=dict(settings),
                                   store=str(store), compute=compute, probe_args=dict(probe_args),
                                   skip_stored=source is not None))
    # Ray Data restarts a dead actor and retries its batch by default (max_restarts=-1, max_task_retries=-1)
    return int(sum(int(n) for batch in probed.iter_batches(batch_format="numpy") for n in batch["probed"]))


def read_pool(source: str | Path, text_field: str = "text"):
    """A pool file or folder read with Ray Data: a ``Dataset`` with one ``text`` column.

    The format comes from the suffix of ``source`` (or of the files in a local folder): ``.jsonl`` /
    ``.json``, ``.csv`` / ``.tsv`` or ``.parquet``. Any filesystem Ray Data reads works (``s3://``,
    ``gs://``, a shared mount).
    """
    ray = _ray()
    suffix = _suffix(source)
    kind = _FORMATS.get(suffix)
    if kind is None:
        raise NeuroshotError(f"cannot tell the format of the pool '{source}': name a .jsonl, .csv, .tsv or "
                             f".parquet file (or a folder of them)")
    path = str(source)
    if kind == "json":
        dataset = ray.data.read_json(path, file_extensions=["json", "jsonl"])
    elif kind == "csv":
        import pyarrow as pa
        from pyarrow import csv

        dataset = ray.data.read_csv(path, file_extensions=["csv", "tsv"],
                                    parse_options=csv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ","),
                                    convert_options=csv.ConvertOptions(column_types={text_field: pa.string()}))
    else:
        dataset = ray.data.read_parquet(path)
    if text_field not in dataset.columns():
        raise NeuroshotError(f"the pool '{source}' has no '{text_field}' column (columns: {', '.join(dataset.columns())})")
    dataset = dataset.select_columns([text_field])
    return dataset if text_field == "text" else dataset.rename_columns({text_field: "text"})


def _suffix(source: str | Path) -> str:
    path = Path(str(source))
    if path.is_dir():
        suffixes = {p.suffix.lower() for p in path.iterdir() if p.suffix.lower() in _FORMATS}
        return suffixes.pop() if len(suffixes) == 1 else ""
    return path.suffix.lower()


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise NeuroshotError('the ray backend needs Ray: pip install "neuroshot[ray]"') from None
    return ray


class _ProbeActor:
    """One model copy: probes a batch of texts and writes it as one store chunk."""

    def __init__(self, source, task, demos, settings, store, compute, probe_args, skip_stored) -> None:
        import torch

        from .models import load_model
        from .store import SignatureStore

        torch.set_num_threads(1)
        self.lm = load_model(source[0], adapter=source[1])
        self.task, self.demos, self.compute, self.args = task, demos, compute, probe_args
        self.store = SignatureStore(store, settings)
        # read when the actor starts, so an actor restarted after a crash also skips what its predecessor wrote
        self.stored = self.store.stored_keys() if skip_stored else set()

    def __call__(self, batch: dict) -> dict:
        from .store import text_key

        texts = [text for text in map(str, batch["text"]) if text_key(text) not in self.stored]
        keys = [text_key(text) for text in texts]
        if not keys:
            return {"probed": [0]}
        name = "ray-" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]
        if self.store.chunk_path(name).exists():  # a retried batch whose chunk was written before
            return {"probed": [0]}
        results = self.compute(self.lm, self.task, texts, keys, demos=self.demos, **self.args)
        self.store.put(results, name=name)
        return {"probed": [len(results)]}
