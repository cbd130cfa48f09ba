"""A LoRA-adapted model: train a small LoRA adapter (PEFT) on part of a labeled pool, then plan
and prompt with the adapted model, and compare with the base model: the task-critical neurons,
the items neuron-aware planning chooses, and the accuracy. Support routing data (banking77, the
15 intents of ``support_ticket_routing``).

The first ``--train-size`` items of the seeded pool sample train the adapter (the task's prompt
-> the label's answer tokens as the causal-LM target) and are removed from the pool to select
from; the validation slice and the test split are never trained on. The adapter is trained on
the dense saved copy of the default model (``load_model``'s cache) and loaded back with
``neuroshot.load_model(spec, adapter=folder)``; it lives in a temporary folder unless ``--adapter DIR``.

Data: the shipped sample ``cookbook/data/banking77`` by default, ``--data ../shared/data/banking77``
for the full set. Two models are evaluated, so the defaults are smaller than the other recipes'
(30 test items, one seed; ``--test-size 200 --seeds 0 1`` for the earlier, longer run).

    .venv/bin/python cookbook/lora_adapted_model.py
    .venv/bin/python cookbook/lora_adapted_model.py --quick    # the smallest run: what the tests run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _recipe  # noqa: E402
import support_ticket_routing as support  # noqa: E402

RECIPE = replace(support.RECIPE, name="lora_adapted_model", pool_size=100, validation_size=16, test_size=30,
                 budgets=(8, 24), seeds=(0,), k=4,
                 smoke=dict(support.RECIPE.smoke, train_size=8, lora_steps=2))
TARGETS = ("gate_proj", "up_proj")


def lora_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train-size", type=int, default=None, help="pool items the adapter is trained on (default: 100)")
    p.add_argument("--lora-steps", type=int, default=None, help="optimizer steps (default: 40, batch 8)")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank (default: 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: 1e-3)")
    p.add_argument("--adapter", type=Path, default=None, help="save the adapter here (default: a temporary folder)")


def train_lora(lm, task, records, folder: Path, *, steps: int, r: int, lr: float, batch_size: int = 8, seed: int = 0) -> dict:
    """Train a LoRA adapter (``TARGETS`` of every layer) on ``records`` with the task's prompt -> answer
    tokens as the target (prompt positions masked out); save it to ``folder``. ``lm`` is changed in place."""
    import torch
    from peft import LoraConfig, get_peft_model

    from neuroshot.scoring import encode, pad_left

    torch.manual_seed(seed)
    enc = encode(lm, task, [x.text for x in records])
    answers = [enc.labels[task.label_index(x.label)] for x in records]
    model = get_peft_model(lm.model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=list(TARGETS),
                                                task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    rng = np.random.default_rng(seed)
    losses, t0 = [], time.perf_counter()
    for step in range(steps):
        rows = rng.choice(len(records), size=min(batch_size, len(records)), replace=False)
        seqs = [enc.prompts[i] + answers[i] for i in rows]
        ids, mask = pad_left(seqs, lm.tokenizer.pad_token_id, lm.device)
        target = torch.full_like(ids, -100)
        for row, i in enumerate(rows):
            target[row, ids.shape[1] - len(answers[i]):] = torch.tensor(answers[i])
        loss = model(input_ids=ids, attention_mask=mask, labels=target).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == steps - 1:
            print(f"  LoRA step {step + 1}/{steps}: loss {losses[-1]:.3f}", flush=True)
    model.save_pretrained(str(folder))
    return dict(steps=steps, r=r, lr=lr, batch_size=batch_size, targets=list(TARGETS), train_items=len(records),
                trainable_parameters=int(sum(p.numel() for p in params)), first_loss=losses[0], last_loss=losses[-1],
                seconds=round(time.perf_counter() - t0, 1))


def zero_shot_accuracy(lm, task, test) -> float:
    from neuroshot.scoring import predict_proba

    probs = predict_proba(lm, task, [x.text for x in test])
    return float(np.mean([task.labels[j] == x.label for j, x in zip(probs.argmax(1), test)]))


def compare(base: _recipe.RecipeResult, lora: _recipe.RecipeResult) -> dict:
    """Critical-neuron overlap, plan overlap and accuracies of the two runs."""
    a, b = set(map(int, base.probe.critical.ids)), set(map(int, lora.probe.critical.ids))
    plan_a, plan_b = set(base.summary["plan"]["ids"]), set(lora.summary["plan"]["ids"])
    means = {}
    for name, res in (("base", base), ("lora", lora)):
        for r in res.records:
            means.setdefault((r.pipeline, r.budget), {}).setdefault(name, []).append(r.accuracy)
    return dict(critical_jaccard=len(a & b) / len(a | b), critical_shared=len(a & b), critical_count=[len(a), len(b)],
                critical_per_layer_base=[int(c) for c in base.probe.critical.per_layer_counts()],
                critical_per_layer_lora=[int(c) for c in lora.probe.critical.per_layer_counts()],
                plan_overlap=len(plan_a & plan_b), plan_budget=base.args.budget,
                accuracy={f"{s} B={bud}": {k: float(np.mean(v)) for k, v in d.items()} for (s, bud), d in means.items()})


def main(argv=None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from neuroshot import load_model
    from neuroshot.experiment import learning_curves
    from neuroshot.plots import plot_learning_curves

    args = _recipe.parse_args(RECIPE, argv, extra=lora_options)
    args.train_size = args.train_size or (RECIPE.smoke["train_size"] if args.smoke else 100)
    args.lora_steps = args.lora_steps or (RECIPE.smoke["lora_steps"] if args.smoke else 40)
    t0 = time.perf_counter()
    split = _recipe.load_split(RECIPE, argparse.Namespace(**{**vars(args), "pool_size": args.pool_size + args.train_size}))
    train, pool = split.pool[:args.train_size], split.pool[args.train_size:]
    split = replace(split, pool=pool)
    print(f"LoRA training items: {len(train)} (removed from the pool); pool to select from: {len(pool)}; "
          f"validation {len(split.validation)}; test {len(split.test)}", flush=True)

    folder = args.adapter or Path(tempfile.mkdtemp(prefix="neuroshot-lora-"))
    training = train_lora(load_model(args.model), split.task, train, folder, steps=args.lora_steps, r=args.lora_r, lr=args.lr)
    training["ids"] = [x.id for x in train]
    print(f"trained {training['trainable_parameters']:,} LoRA parameters in {training['seconds']:.0f} s "
          f"(loss {training['first_loss']:.3f} -> {training['last_loss']:.3f}); adapter in {folder}", flush=True)

    base_lm, lora_lm = load_model(args.model), load_model(args.model, adapter=folder)
    zero = {"base": zero_shot_accuracy(base_lm, split.task, split.test), "lora": zero_shot_accuracy(lora_lm, split.task, split.test)}
    print(f"zero-shot test accuracy: base {zero['base']:.3f}, LoRA {zero['lora']:.3f}", flush=True)
    base = _recipe.evaluate(RECIPE, args, base_lm, split, args.out / "base", title="base model")
    lora = _recipe.evaluate(RECIPE, args, lora_lm, split, args.out / "lora", embedding=base.embedding,
                            title="LoRA-adapted model")
    result = compare(base, lora)
    result.update(zero_shot=zero, training=training, command=args.command, total_seconds=round(time.perf_counter() - t0, 1),
                  load_average_end=os.getloadavg(), embedding_baseline=base.embedding,
                  fingerprints=dict(base=base_lm.fingerprint, lora=lora_lm.fingerprint))
    curves = {f"{tag}: {name}": curve for tag, res in (("base", base), ("LoRA", lora))
              for name, curve in learning_curves(res.records).items()}
    result["curve"] = str(plot_learning_curves(curves, args.out / "learning_curve.png", baseline=None,
                                               title="base vs LoRA-adapted model: accuracy vs labels (per-query)"))
    (args.out / "comparison.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")

    print("\n## Base vs LoRA-adapted model\n")
    print("| pipeline, budget | base accuracy | LoRA accuracy |\n|---|---:|---:|")
    print(f"| zero-shot | {zero['base']:.3f} | {zero['lora']:.3f} |")
    for key, acc in result["accuracy"].items():
        print(f"| {key} | {acc['base']:.3f} | {acc['lora']:.3f} |")
    print(f"\ntask-critical neurons: {result['critical_count'][0]} (base) / {result['critical_count'][1]} (LoRA), "
          f"{result['critical_shared']} shared (Jaccard {result['critical_jaccard']:.2f})")
    print(f"items chosen by the recommended pipeline at budget {args.budget} (seed 0): {result['plan_overlap']} of "
          f"{args.budget} the same")
    print(f"\nwrote {args.out / 'comparison.json'}, {result['curve']}; total {result['total_seconds']:.0f} s, "
          f"1-min load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s)", flush=True)
    return dict(result, base=base, lora=lora)


if __name__ == "__main__":
    main()
