"""Name -> class registries for the pluggable parts (strategies, retrievers)."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Generic, TypeVar

from .errors import NeuroshotError

T = TypeVar("T")


class Pluggable:
    """A registered part: a ``name``, and its constructor parameters (its public attributes, not the
    ``_private`` ones nor, as in scikit-learn, the ``fitted_`` ones) for ``get_params`` and ``repr``."""

    name: ClassVar[str]

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and not k.endswith("_")}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"


class Registry(Generic[T]):
    """Classes with a ``name`` attribute, registered by a decorator and built by name with parameters."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: make ``cls`` available by its ``name``."""
        self.classes[cls.name] = cls  # type: ignore[attr-defined]
        return cls

    def create(self, name: str, **params: Any) -> T:
        try:
            cls = self.classes[name]
        except KeyError:
            raise NeuroshotError(f"unknown {self.kind} '{name}' (available: {', '.join(sorted(self.classes))})") from None
        known = parameters(cls)
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise NeuroshotError(f"{self.kind} '{name}' has no parameter {', '.join(map(repr, unknown))} "
                                 f"(its parameters: {', '.join(known) or 'none'})")
        try:
            return cls(**params)
        except TypeError as exc:
            raise NeuroshotError(f"{self.kind} '{name}': {exc}") from None


def parameters(cls: type) -> list[str]:
    """The keyword parameters of ``cls``'s constructor, in order."""
    return [p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
