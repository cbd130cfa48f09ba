"""Parameter checks shared by strategies, retrievers, probing and the CLI.

One wording and one error type (:class:`NeuroshotError`) everywhere, so that a bad value given on
the command line ends in one ``neuroshot: error:`` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Collection, Iterable
from numbers import Integral, Real
from typing import Any

from .errors import NeuroshotError


def check_whole(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int, when it is a whole number >= ``minimum`` (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise NeuroshotError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def check_in(name: str, value: Any, low: float, high: float = math.inf, *, low_open: bool = False) -> float:
    """``value`` as a float, when it is a number in the interval from ``low`` to ``high``.

    The ends are included unless ``low_open``; the message writes the interval the mathematical
    way, e.g. ``(0, 1]``.
    """
    ok = isinstance(value, Real) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        raise NeuroshotError(f"{name} must be {_interval(low, high, low_open)}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Collection[str]) -> str:
    """``value`` when it is one of ``choices``."""
    if value not in choices:
        raise NeuroshotError(f"unknown {name} {value!r} (choose from {', '.join(map(str, choices))})")
    return value


def check_texts(texts: Iterable[Any], *, blank_ok: bool = True) -> None:
    """``texts`` is a sequence of strings: one string would otherwise be read as its characters.

    With ``blank_ok=False`` (probing) an empty or whitespace-only text is an error too: its
    signature would only say how the model reads the prompt around it.
    """
    if isinstance(texts, str):
        raise NeuroshotError("texts must be a list of strings, not one string: pass [text]")
    blank = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise NeuroshotError(f"texts must be strings: item {i} is {type(text).__name__} {text!r:.40}")
        if not blank_ok and not text.strip():
            blank.append(i)
    if blank:
        shown = ", ".join(map(str, blank[:10])) + (f" and {len(blank) - 10} more" if len(blank) > 10 else "")
        raise NeuroshotError(f"empty or whitespace-only text at item(s) {shown} (counting from 0): probing it "
                             "gives a meaningless signature; drop or fill those items")


def check_k_available(k: int, available: int) -> int:
    """``min(k, available)``, with one clear warning when fewer than ``k`` annotated items exist
    (rather than quietly giving each prompt fewer demonstrations than asked for)."""
    if k > available:
        warnings.warn(f"k={k} but only {available} annotated item{'s' if available != 1 else ''}: "
                      f"each prompt gets {available}", UserWarning, stacklevel=3)
    return min(k, available)


_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def check_file_name(what: str, name: Any) -> str:
    """``name`` when it is safe as one file name inside a folder neuroshot owns: letters, digits,
    ``.``, ``_``, ``-``; never a path (``/``, ``..``), an absolute name or a NUL byte."""
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name) or ".." in name:
        raise NeuroshotError(f"{what} {name!r:.60} cannot be a file name: use letters, digits, '.', '_' and '-' "
                             "(no folders, no '..')")
    return name


def _interval(low: float, high: float, low_open: bool) -> str:
    if math.isinf(high):
        return f"{'>' if low_open else '>='} {_number(low)}"
    return f"in {'(' if low_open else '['}{_number(low)}, {_number(high)}]"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
