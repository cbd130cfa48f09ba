"""Annotation planning strategies, one small class each, all behind ``Strategy.plan``."""

from . import baselines, coverage, neufs  # noqa: F401  (registers the strategies)
from . import embedding  # noqa: F401  (embedding baselines; sentence-transformers loads lazily)
from . import active  # noqa: F401  (active rounds around any of them: 'active:NAME')
from .base import STRATEGIES, Pick, Plan, Strategy, get_strategy, register

__all__ = ["STRATEGIES", "Pick", "Plan", "Strategy", "get_strategy", "register"]
