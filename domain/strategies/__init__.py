"""Strategy plug-ins: one module per kind, each with ``PLUGIN`` (:class:`base.StrategyPlugin`).

Adding a strategy is adding a module here: the config names its kind, and the node gives each
configured strategy its own actor (docs/strategies/README.md). Shipped kinds: ``grid``
(volatility-adaptive grid), ``hedge`` (cross-asset hedge of another strategy's inventory),
``ema_cross`` (EMA fast/slow cross) and ``ref_grid`` (the reference grid), the peer benchmark's
two reference strategies.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from domain.strategies.base import StrategyPlugin

_NOT_KINDS = frozenset({"base"})


def available() -> list[str]:
    """Kinds shipped in this package (module names with a ``PLUGIN``), sorted."""
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if not m.name.startswith("_") and m.name not in _NOT_KINDS)


def load_plugin(kind: str) -> StrategyPlugin:
    """The plug-in of strategy kind ``kind`` (module ``domain.strategies.<kind>``).

    Raises:
        ValueError: unknown kind (the message lists the available ones) or a module without ``PLUGIN``.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", kind) or kind in _NOT_KINDS or kind not in available():
        raise ValueError(f"unknown strategy kind {kind!r}; available: {', '.join(available())}")
    module = importlib.import_module(f"domain.strategies.{kind}")
    plugin = getattr(module, "PLUGIN", None)
    if not isinstance(plugin, StrategyPlugin):
        raise ValueError(f"domain.strategies.{kind} defines no PLUGIN")
    return plugin
