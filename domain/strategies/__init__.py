"""Strategy plug-ins: one module per kind, each with ``PLUGIN`` (:class:`base.StrategyPlugin`).

Adding a strategy is adding a module here: the config names its kind, and the node gives each
configured strategy its own actor (docs/strategies/README.md). Shipped kinds: ``grid``
(volatility-adaptive grid), ``hedge`` (cross-asset hedge of another strategy's inventory),
``ema_cross`` (EMA fast/slow cross) and ``ref_grid`` (the reference grid), the peer benchmark's
two reference strategies.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from pathlib import Path

from domain.strategies.base import StrategyPlugin

_NOT_KINDS = frozenset({"base", "bracket"})


def available() -> list[str]:
    """Kinds shipped in this package (module names with a ``PLUGIN``), sorted."""
    return list(_kinds())


@functools.cache
def _kinds() -> tuple[str, ...]:
    """The package listing, read once per process."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                        if not m.name.startswith("_") and m.name not in _NOT_KINDS))


def load_plugin(kind: str) -> StrategyPlugin:
    """The plug-in of strategy kind ``kind`` (module ``domain.strategies.<kind>``).

    Raises:
        ValueError: unknown kind (the message lists the available ones) or a module without ``PLUGIN``.
    """
    if not isinstance(kind, str) or kind not in _kinds():
        raise ValueError(f"unknown strategy kind {kind!r}; available: {', '.join(available())}")
    return _plugin(kind)


@functools.cache
def _plugin(kind: str) -> StrategyPlugin:
    """The ``PLUGIN`` of a listed kind, imported once per process."""
    module = importlib.import_module(f"domain.strategies.{kind}")
    plugin = getattr(module, "PLUGIN", None)
    if not isinstance(plugin, StrategyPlugin):
        raise ValueError(f"domain.strategies.{kind} defines no PLUGIN")
    return plugin
