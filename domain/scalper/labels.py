"""Triple-barrier labels of the ML scalper and its train / test splits by time. Pure numpy, no I/O.

Source: M. López de Prado, *Advances in Financial Machine Learning* (Wiley, 2018; "AFML"),
ch. 3 "Labeling", section 3.4 "The Triple-Barrier Method", and ch. 7 "Cross-Validation in
Finance", sections 7.4.1 "Purging the Training Set" and 7.4.2 "Embargo". The code is our own (no
library): the tests (tests/test_scalper_labels.py) check it on hand-made paths and against a slow
bar-by-bar reference on random walks.

Units
-----
- **points**: prices as the bars carry them (``float``; ES 5000.25, ...).
- **ticks**: barrier distances, integers; one tick is ``tick_size`` points (ES 0.25).
- **bars**: the horizon ``max_bars`` and every index / length of the splits count bars (array
  positions), whatever time lies between bars.

Labels (:func:`triple_barrier_labels`)
--------------------------------------
The **symmetric long / short variant** of AFML's triple-barrier method. For bar ``i`` the entry
price is ``e = close[i]``; the horizon is bars ``i+1 .. i+max_bars`` (the vertical barrier). Two
hypothetical trades open at ``e``:

- **long**: take-profit ``e + take_ticks*tick_size`` (touched when ``high >= level``), stop
  ``e - stop_ticks*tick_size`` (touched when ``low <= level``);
- **short**: take-profit ``e - take_ticks*tick_size`` (``low <= level``), stop
  ``e + stop_ticks*tick_size`` (``high >= level``).

A trade **wins** when its take-profit is touched on a bar strictly before the first bar that
touches its stop, within the horizon. A bar that touches both the take and the stop of the same
trade counts as the **stop** (the careful side: a bar does not tell the order of the moves inside
it). Then::

    label = +1   the long wins and the short does not
    label = -1   the short wins and the long does not
    label =  0   neither wins (time-out, stops) or both win

"Both win" is possible only when ``take_ticks < stop_ticks`` (e.g. the price dips to the short's
take, then rises to the long's take, the stops being farther away); such a bar is labelled 0 even
though the short's take came first: the label asks "did exactly one side's trade win", not "which
side's take was touched first". With ``take_ticks >= stop_ticks`` at most one side can win.

Touches compare with a tolerance of ``1e-6`` tick, so a float level such as ``1.3 + 2*0.1`` is
touched by a high of ``1.5``. Bars whose horizon runs past the data (the last ``max_bars``) get
label 0 and ``valid`` False: they must not be used to train or score, even when one barrier was
already touched.

Splits (:func:`purged_time_split`, :func:`walk_forward_splits`)
---------------------------------------------------------------
By time, never shuffled. The label of bar ``i`` reads bars up to ``i + max_bars``, so a training bar
within ``max_bars`` bars before the test start would learn from test-period prices: those bars are
**purged** (AFML 7.4.1); ``purge >= max_bars`` of the labels removes all of them. AFML's **embargo**
(7.4.2) drops the bars right after a test block from training (serial correlation); here training
always precedes the test, so the same guard is a gap taken at the **start of the test** block:
``embargo`` test bars are dropped and the last training bar and the first test bar are
``purge + embargo + 1`` bars apart.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator

import numpy as np

__all__ = ["purged_time_split", "triple_barrier_labels", "walk_forward_splits"]

_TOUCH_TOL = 1e-6
"""Tolerance of a barrier touch, in ticks (float rounding of ``entry + k*tick_size``)."""


def _count(name: str, value: object, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (ints and numpy ints; not bool, not float)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _first_touch(touched: np.ndarray, first: np.ndarray, k: int) -> None:
    """Set ``first`` to ``k`` where ``touched`` and not yet set (``first`` == never)."""
    np.copyto(first, k, where=touched & (first > k))


def triple_barrier_labels(high: np.ndarray, low: np.ndarray, close: np.ndarray, *, tick_size: float,
                          take_ticks: int, stop_ticks: int, max_bars: int,
                          entry: str = "close") -> tuple[np.ndarray, np.ndarray]:
    """Symmetric long / short triple-barrier labels (AFML ch. 3.4; module docstring).

    Args:
        high, low, close: bar prices in points, 1-D arrays of the same length ``n``, finite.
        tick_size: points per tick, > 0.
        take_ticks, stop_ticks: take-profit and stop distances from the entry, in ticks, >= 1.
        max_bars: the horizon (vertical barrier) in bars, >= 1.
        entry: the entry price of bar ``i``; only ``"close"`` (``close[i]``).

    Returns:
        ``(labels, valid)``: ``labels`` int8 of -1 / 0 / +1, ``valid`` bool, both of length ``n``;
        ``valid`` is False (and the label 0) for the last ``max_bars`` bars.

    Raises:
        ValueError: arrays not 1-D, of different lengths or not finite; a bad parameter.

    O(n * max_bars) time, O(n) memory: a python loop over the horizon offset ``k`` only.
    """
    if entry != "close":
        raise ValueError(f"entry must be 'close', got {entry!r}")
    take = _count("take_ticks", take_ticks, 1)
    stop = _count("stop_ticks", stop_ticks, 1)
    horizon = _count("max_bars", max_bars, 1)
    tick = float(tick_size)
    if not (math.isfinite(tick) and tick > 0):
        raise ValueError(f"tick_size must be a finite number > 0, got {tick_size!r}")
    h, lo, c = (np.asarray(a, dtype=np.float64) for a in (high, low, close))
    if h.ndim != 1 or lo.ndim != 1 or c.ndim != 1 or not (len(h) == len(lo) == len(c)):
        raise ValueError(f"high, low, close must be 1-D arrays of one length, got shapes {h.shape}, {lo.shape}, {c.shape}")
    if not (np.isfinite(h).all() and np.isfinite(lo).all() and np.isfinite(c).all()):
        raise ValueError("high, low, close must be finite (no NaN / inf)")

    n = len(c)
    labels = np.zeros(n, dtype=np.int8)
    valid = np.zeros(n, dtype=bool)
    m = n - horizon                         # bars 0 .. m-1 have their full horizon
    if m <= 0:
        return labels, valid
    valid[:m] = True

    e = c[:m]
    tol = _TOUCH_TOL * tick
    up_take = e + take * tick - tol          # long take / short stop sit above the entry
    up_stop = e + stop * tick - tol
    dn_take = e - take * tick + tol          # short take / long stop sit below
    dn_stop = e - stop * tick + tol

    never = horizon + 1
    long_take = np.full(m, never, dtype=np.int64)
    long_stop = np.full(m, never, dtype=np.int64)
    short_take = np.full(m, never, dtype=np.int64)
    short_stop = np.full(m, never, dtype=np.int64)
    for k in range(1, horizon + 1):         # bar i + k for every i at once
        hk, lk = h[k:k + m], lo[k:k + m]
        _first_touch(hk >= up_take, long_take, k)
        _first_touch(lk <= dn_stop, long_stop, k)
        _first_touch(lk <= dn_take, short_take, k)
        _first_touch(hk >= up_stop, short_stop, k)

    long_wins = long_take < long_stop        # same bar (==) counts as the stop; never == never
    short_wins = short_take < short_stop
    labels[:m][long_wins & ~short_wins] = 1
    labels[:m][short_wins & ~long_wins] = -1
    return labels, valid


def purged_time_split(n: int, *, test_fraction: float | None = None, test_start: int | None = None,
                      purge: int, embargo: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One train / test split by time with a purge gap (AFML 7.4; module docstring).

    The test block starts at ``test_start``, or, with ``test_fraction``, is the last
    ``round(n * test_fraction)`` bars (give exactly one of the two). Then::

        train = [0, test_start - purge)
        test  = [test_start + embargo, n)

    Args:
        n: number of bars (labels).
        test_fraction: in (0, 1).
        test_start: index of the first test bar, in [1, n).
        purge: bars removed from the end of the training set, >= 0; use at least the labels'
            ``max_bars`` (a training label must not read test-period prices).
        embargo: bars dropped at the start of the test block, >= 0.

    Returns: ``(train_idx, test_idx)``, increasing ``intp`` index arrays, disjoint, every train
    index before every test index.

    Raises: ValueError on a bad argument or when the train or the test set would be empty.
    """
    n = _count("n", n, 1)
    purge = _count("purge", purge, 0)
    embargo = _count("embargo", embargo, 0)
    if (test_fraction is None) == (test_start is None):
        raise ValueError("give exactly one of test_fraction and test_start")
    if test_fraction is not None:
        f = float(test_fraction)
        if not (0.0 < f < 1.0):
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        start = n - round(n * f)
    else:
        start = _count("test_start", test_start, 0)
    if not (0 < start < n):
        raise ValueError(f"the test block starts at bar {start} of {n}: no train or no test bars")
    train_end = start - purge
    test_begin = start + embargo
    if train_end <= 0:
        raise ValueError(f"empty training set: test starts at bar {start}, purge {purge}")
    if test_begin >= n:
        raise ValueError(f"empty test set: test starts at bar {start}, embargo {embargo}, {n} bars")
    return np.arange(0, train_end, dtype=np.intp), np.arange(test_begin, n, dtype=np.intp)


def walk_forward_splits(n: int, *, train: int, test: int, purge: int,
                        step: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Rolling walk-forward windows by time, each ``(train_idx, test_idx)``.

    Window ``w`` (``s = w * step``)::

        train = [s, s + train)
        purge gap of ``purge`` bars
        test  = [s + train + purge, s + train + purge + test)

    while the test block fits in ``n`` bars (no short last window). ``step`` defaults to ``test``:
    the test blocks then tile the data without overlap. ``purge`` >= the labels' ``max_bars``
    keeps every training label from reading its own window's test prices (later windows train on
    earlier test periods, as walk-forward does).

    Raises (at the call, not at the first ``next``): ValueError when ``train``, ``test`` or
    ``step`` < 1, ``purge`` < 0, or not even one window fits.
    """
    n = _count("n", n, 0)
    train = _count("train", train, 1)
    test = _count("test", test, 1)
    purge = _count("purge", purge, 0)
    step = test if step is None else _count("step", step, 1)
    width = train + purge + test
    if width > n:
        raise ValueError(f"{n} bars: too few for one window of {train} train + {purge} purge + {test} test bars")

    def windows() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        s = 0
        while s + width <= n:
            yield (np.arange(s, s + train, dtype=np.intp),
                   np.arange(s + train + purge, s + width, dtype=np.intp))
            s += step

    return windows()
