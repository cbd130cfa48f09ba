"""The terminal annotation session behind ``neuroshot annotate``: one item at a time, resumable."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import NeuroshotError
from .labels import AnnotationItem, _LabelSet
from .log import AnnotationLog

_SKIP, _QUIT = "s", "q"


def _parse_answer(answer: str, labels: _LabelSet, numbered: bool) -> tuple[str | None, str]:
    """Interpret one typed answer: ``(label, "")``, ``(None, "skip"|"quit")`` or ``(None, why)``."""
    text = answer.strip()
    key = text.casefold()
    if not text:
        return None, "please type a label" + (" number or name" if numbered else " name")
    if key == _SKIP:
        return None, "skip"
    if key == _QUIT:
        return None, "quit"
    if numbered and text.isdigit():
        k = int(text)
        if 1 <= k <= len(labels.names):
            return labels.names[k - 1], ""
        return None, f"no label number {k}: choose 1-{len(labels.names)}"
    exact = labels.lookup(text)
    if exact is not None:
        return exact, ""
    matches = [name for name in labels.names if name.casefold().startswith(key)]
    if len(matches) == 1:
        return matches[0], ""
    if matches:
        return None, f"{text!r} could be {', '.join(matches)}: type more of the name"
    return None, f"unknown label {text!r}; allowed labels: {labels}"


def run_annotation_session(
    items: Sequence[AnnotationItem],
    labels: Sequence[str],
    log: AnnotationLog,
    *,
    input_fn: Callable[[str], str] = input,
    print_fn: Callable[..., Any] = print,
) -> int:
    """Label the items not yet in ``log`` in the terminal, in rank order; return how many were given.

    Answer with a label number or name (ignoring case; a unique prefix is enough), ``s`` to skip
    or ``q`` to quit; Ctrl-C / Ctrl-D also end the session. When a label is itself a number,
    labels are chosen by name only. Each label is in the log (on disk) before the next item shows.
    """
    label_set = _LabelSet(labels)
    if {n.casefold() for n in label_set.names} != {n.casefold() for n in log.allowed_labels}:
        raise NeuroshotError(
            f"the session labels ({label_set}) differ from the log's ({', '.join(log.allowed_labels)})"
        )
    numbered = not any(name.isdigit() for name in label_set.names)
    if numbered:
        menu = "\n".join(f"  {k}) {name}" for k, name in enumerate(label_set.names, start=1))
        prompt = "label (number or name; s = skip, q = quit): "
    else:
        menu = "  " + " | ".join(label_set.names)
        prompt = "label (name; s = skip, q = quit): "

    plan = sorted(items, key=lambda it: it.rank)
    total = len(plan)
    given = 0
    try:
        for item in plan:
            if item.id in log:
                continue
            print_fn(f"\n[{item.rank}/{total}] {item.why}".rstrip())
            print_fn(item.text)
            print_fn(menu)
            label, note = _parse_answer(input_fn(prompt), label_set, numbered)
            while label is None and note not in ("skip", "quit"):
                print_fn(note)
                label, note = _parse_answer(input_fn(prompt), label_set, numbered)
            if note == "quit":
                break
            if label is not None:
                log.add(item.id, label)
                given += 1
    except (EOFError, KeyboardInterrupt):
        print_fn("")  # end the prompt's line; every label given is already on disk
    done = sum(1 for it in plan if it.id in log)
    print_fn(f"{given} labelled now; {done} of {total} labelled, {total - done} remaining (saved in {log.path})")
    return given
