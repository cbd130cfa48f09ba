"""Memory and time per 1,000 items by model size: measured for the two local models, computed for 1B / 8B.

For each model, in a fresh process with ``--threads`` torch threads (default 1): load it (from a
warm cache, timed), read the resident memory, then probe the support tickets that ship with the
package (``direct_logit``, the recommended pipeline's probe; batch 16), warmed up once, and report
CPU seconds and wall seconds per 1,000 items and the peak resident memory of the run. CPU seconds on
one thread are the robust figure on a shared machine (wall time there grows with the other jobs). Larger models are not downloaded: their rows are computed from the
formulas printed with them and marked as such. Run from the repository root::

    .venv/bin/python benchmarks/model_footprint.py

Results: docs/your-model.md ("Memory and time by model size") and benchmarks/results/model_footprint.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import environment, provenance, run_child  # noqa: E402
from shared_sets import REPO, model_spec  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "model_footprint.json"
MODELS = ("default", "gemma-3-270m")
# published Llama configs (hidden, layers, kv heads x head dim, d_ff, total parameters): not downloaded
COMPUTED = {
    "Llama-3.2-1B": dict(hidden=2048, layers=16, kv=8 * 64, d_ff=8192, total=1.236e9),
    "Llama-3.1-8B": dict(hidden=4096, layers=32, kv=8 * 128, d_ff=14336, total=8.030e9),
}


def _rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _child(spec: str, n: int, batch_size: int, threads: int) -> dict:
    """Load ``spec``, probe ``n`` demo tickets; print one JSON line."""
    import torch

    from neuroshot.demo import DEMO_TASK, demo_records
    from neuroshot.models import load_model
    from neuroshot.probing import probe

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    lm = load_model(spec)
    load_s = time.perf_counter() - t0
    rss_loaded = _rss_mib()
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark: the run's own peak
    texts = [r.text for r in demo_records()][:n]
    probe(lm, DEMO_TASK, texts[:16], progress=False, batch_size=batch_size)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    probe(lm, DEMO_TASK, texts, progress=False, batch_size=batch_size)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    embedding = lm.model.get_input_embeddings().weight
    params = sum(p.numel() for p in lm.model.parameters())
    non_embedding = sum(p.numel() for p in lm.model.parameters() if p is not embedding)
    return {"model": lm.name, "params": params, "non_embedding_params": non_embedding,
            "layers": len(lm.layers), "load_s": load_s, "rss_loaded_mib": rss_loaded,
            "run_peak_rss_mib": _rss_mib("VmHWM"), "items": len(texts),
            "s_per_1k": seconds / len(texts) * 1000, "cpu_s_per_1k": cpu / len(texts) * 1000, "threads": threads,
            "load_average_at_end": list(os.getloadavg()), "env": environment(lm)}


def _non_embedding(c: dict) -> float:
    """Attention (q, o: hidden^2 each; k, v: hidden x kv) + gated MLP (3 x hidden x d_ff), per layer."""
    return c["layers"] * (2 * c["hidden"] ** 2 + 2 * c["hidden"] * c["kv"] + 3 * c["hidden"] * c["d_ff"])


def computed_rows(reference: dict) -> list[dict]:
    """1B / 8B rows from the measured default model: weights = parameters x bytes per parameter;
    CPU time = measured CPU s / 1k x (non-embedding parameters / the reference's), i.e. compute-bound on the
    same CPU; signature bytes = layers x 64 neurons x 8 bytes."""
    rows = []
    for name, c in COMPUTED.items():
        ne = _non_embedding(c)
        rows.append({"model": name, "params": c["total"], "non_embedding_params": ne,
                     "weights_fp32_mib": c["total"] * 4 / 2**20, "weights_bf16_mib": c["total"] * 2 / 2**20,
                     "cpu_s_per_1k": reference["cpu_s_per_1k"] * ne / reference["non_embedding_params"],
                     "signature_bytes": c["layers"] * 64 * 8})
    return rows


def table(measured: list[dict], computed: list[dict]) -> str:
    lines = ["| model | parameters (non-embedding) | how | load s | memory, model loaded MiB | peak while probing MiB "
             "| probe CPU s / 1k items (1 thread) | probe wall s / 1k | signature bytes / item |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for m in measured:
        lines.append(f"| {m['model']} | {m['params'] / 1e6:.0f}M ({m['non_embedding_params'] / 1e6:.0f}M) | measured "
                     f"| {m['load_s']:.1f} | {m['rss_loaded_mib']:,.0f} | {m['run_peak_rss_mib']:,.0f} "
                     f"| {m['cpu_s_per_1k']:,.0f} | {m['s_per_1k']:,.0f} | {m['layers'] * 64 * 8:,} |")
    for c in computed:
        lines.append(f"| {c['model']} | {c['params'] / 1e9:.2f}B ({c['non_embedding_params'] / 1e9:.2f}B) | "
                     f"**computed** | - | weights alone: {c['weights_fp32_mib']:,.0f} (float32), "
                     f"{c['weights_bf16_mib']:,.0f} (bfloat16) | - | ~{c['cpu_s_per_1k']:,.0f} | - "
                     f"| {c['signature_bytes']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="benchmarks/model_footprint.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), help="model specs (default, gemma-3-270m, a path)")
    p.add_argument("--n", type=int, default=150, help="demo tickets probed per model (at most 150)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads in each measuring process")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        print(json.dumps(_child(args._child, args.n, args.batch_size, args.threads)), flush=True)
        return
    measured = []
    for name in args.models:
        spec = model_spec(name)
        run_child(__file__, ["--_child", spec, "--n", "16"])  # converts a GGUF into the cache once, untimed
        measured.append(run_child(__file__, ["--_child", spec, "--n", str(args.n), "--batch-size",
                                             str(args.batch_size), "--threads", str(args.threads)]))
        print(f"{name}: {measured[-1]['cpu_s_per_1k']:.0f} CPU s / 1k items", flush=True)
    reference = next(m for m in measured if m["model"].startswith("SmolLM2"))
    computed = computed_rows(reference)
    text = table(measured, computed)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load_average_at_end": os.getloadavg(), **provenance("benchmarks/model_footprint.py", argv),
                                    "measured": measured, "computed": computed, "table": text}, indent=1) + "\n")


if __name__ == "__main__":
    main()
