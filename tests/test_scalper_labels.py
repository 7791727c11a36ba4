"""Triple-barrier labels and time splits of the ML scalper (domain/scalper/labels.py).

Hand-made paths are written in ticks from an entry close of 100.00 (tick 0.25): :func:`path` takes
bars as ``(h, l)``, a bar whose high is ``h`` ticks and low ``l`` ticks from the entry (close in
between).
"""

from __future__ import annotations

import numpy as np
import pytest

from domain.scalper.labels import (
    purged_time_split,
    triple_barrier_labels,
    walk_forward_splits,
)

TICK = 0.25
BASE = 100.0


def path(*bars: tuple[int, int], n_after: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bar 0 is the entry (close = BASE, high = low = BASE); then ``bars`` as (high, low) in ticks
    from BASE, close at the middle; then ``n_after`` flat bars at BASE."""
    hl = [(0, 0), *bars] + [(0, 0)] * n_after
    high = np.array([BASE + h * TICK for h, _ in hl])
    low = np.array([BASE + lo * TICK for _, lo in hl])
    close = (high + low) / 2
    return high, low, close


def label0(bars: list[tuple[int, int]], *, take: int, stop: int, max_bars: int) -> int:
    high, low, close = path(*bars, n_after=max_bars)
    labels, valid = triple_barrier_labels(high, low, close, tick_size=TICK, take_ticks=take, stop_ticks=stop,
                                          max_bars=max_bars)
    assert valid[0]
    return int(labels[0])


# --- labels on hand-made paths ----------------------------------------------------------------

def test_rise_by_take_first_is_long() -> None:
    assert label0([(1, -1), (4, 1)], take=4, stop=4, max_bars=5) == 1


def test_fall_by_take_first_is_short() -> None:
    assert label0([(1, -1), (-1, -4)], take=4, stop=4, max_bars=5) == -1


def test_just_short_of_the_take_is_timeout() -> None:
    assert label0([(3, -3), (3, -3), (3, -3)], take=4, stop=4, max_bars=3) == 0


def test_take_after_the_horizon_does_not_count() -> None:
    assert label0([(1, 0), (1, 0), (4, 0)], take=4, stop=4, max_bars=2) == 0
    assert label0([(1, 0), (1, 0), (4, 0)], take=4, stop=4, max_bars=3) == 1


def test_take_and_stop_in_one_bar_counts_as_stop() -> None:
    # long take (+4) and long stop (-2) in bar 1: the stop; the short's stop (+2) is hit too -> 0
    assert label0([(4, -2), (8, 0)], take=4, stop=2, max_bars=5) == 0
    # the same bar after the long already won in bar 1: irrelevant, still +1
    assert label0([(4, 0), (4, -2)], take=4, stop=2, max_bars=5) == 1
    # stop strictly before the take: the long loses even though its take comes later
    assert label0([(0, -2), (4, 0)], take=4, stop=2, max_bars=5) == 0
    # symmetric for the short
    assert label0([(2, -4)], take=4, stop=2, max_bars=5) == 0
    assert label0([(0, -4), (2, -4)], take=4, stop=2, max_bars=5) == -1


def test_flat_path_is_timeout_zero() -> None:
    high, low, close = path(n_after=20)
    labels, valid = triple_barrier_labels(high, low, close, tick_size=TICK, take_ticks=4, stop_ticks=4, max_bars=5)
    assert labels.dtype == np.int8 and valid.dtype == bool
    assert (labels == 0).all()
    assert valid[:-5].all() and not valid[-5:].any()


def test_last_max_bars_are_invalid_and_zero_even_with_a_move() -> None:
    # the last bar jumps by +10 ticks: bars within the final max_bars would see it, but have no full horizon
    high, low, close = path(*([(0, 0)] * 9), (10, 10))
    n, max_bars = len(close), 3
    labels, valid = triple_barrier_labels(high, low, close, tick_size=TICK, take_ticks=4, stop_ticks=4,
                                          max_bars=max_bars)
    assert list(valid) == [True] * (n - max_bars) + [False] * max_bars
    assert (labels[-max_bars:] == 0).all()
    assert labels[n - max_bars - 1] == 1          # the last valid bar sees the jump on its last horizon bar


def test_horizon_longer_than_data_all_invalid() -> None:
    high, low, close = path((4, 0))
    labels, valid = triple_barrier_labels(high, low, close, tick_size=TICK, take_ticks=4, stop_ticks=4, max_bars=2)
    assert not valid.any() and (labels == 0).all()
    labels, valid = triple_barrier_labels(high, low, close, tick_size=TICK, take_ticks=4, stop_ticks=4, max_bars=1)
    assert list(valid) == [True, False] and list(labels) == [1, 0]


def test_short_take_first_then_long_take_then_long_stop() -> None:
    """bar 1 dips to -4 (short's take), bar 2 rises to +4 (long's take), bar 3 falls to -8.

    take 4 / stop 8: the long wins (take at bar 2, its stop -8 only at bar 3) and the short wins
    (take at bar 1, its stop +8 never): both win -> 0, although the short's take came first.
    take 4 / stop 4: the long is stopped at bar 1 (-4), the short wins at bar 1 -> -1.
    """
    bars = [(0, -4), (4, 0), (0, -8)]
    assert label0(bars, take=4, stop=8, max_bars=5) == 0
    assert label0(bars, take=4, stop=4, max_bars=5) == -1
    # horizon ending before the long's take: only the short wins
    assert label0(bars, take=4, stop=8, max_bars=1) == -1


def test_float_tick_levels_are_touched() -> None:
    # 1.3 + 2 * 0.1 = 1.5000000000000002 in floats: a high of 1.5 still touches the take
    high, low, close = np.array([1.3, 1.5, 1.4]), np.array([1.3, 1.4, 1.4]), np.array([1.3, 1.45, 1.4])
    labels, _ = triple_barrier_labels(high, low, close, tick_size=0.1, take_ticks=2, stop_ticks=2, max_bars=1)
    assert labels[0] == 1
    labels, _ = triple_barrier_labels(-low, -high, -close, tick_size=0.1, take_ticks=2, stop_ticks=2, max_bars=1)
    assert labels[0] == -1


@pytest.mark.parametrize("kwargs", [
    {"tick_size": 0.0}, {"tick_size": -0.25}, {"tick_size": float("nan")},
    {"take_ticks": 0}, {"stop_ticks": -1}, {"max_bars": 0}, {"take_ticks": 2.5}, {"max_bars": True},
    {"entry": "open"},
])
def test_label_bad_parameters_raise(kwargs: dict) -> None:
    high, low, close = path(n_after=5)
    args = {"tick_size": TICK, "take_ticks": 4, "stop_ticks": 4, "max_bars": 2, **kwargs}
    with pytest.raises(ValueError):
        triple_barrier_labels(high, low, close, **args)


def test_label_bad_arrays_raise() -> None:
    high, low, close = path(n_after=5)
    kw = {"tick_size": TICK, "take_ticks": 4, "stop_ticks": 4, "max_bars": 2}
    with pytest.raises(ValueError):
        triple_barrier_labels(high[:-1], low, close, **kw)
    with pytest.raises(ValueError):
        triple_barrier_labels(high.reshape(1, -1), low.reshape(1, -1), close.reshape(1, -1), **kw)
    bad = close.copy()
    bad[2] = np.nan
    with pytest.raises(ValueError):
        triple_barrier_labels(high, low, bad, **kw)


# --- property check against a slow reference ---------------------------------------------------

def reference_labels(high_t: list[int], low_t: list[int], close_t: list[int], take: int, stop: int,
                     max_bars: int) -> tuple[list[int], list[bool]]:
    """Bar by bar, side by side, in integer ticks: walk forward; the stop is checked before the take."""
    def wins(i: int, side: int) -> bool:
        e = close_t[i]
        for j in range(i + 1, i + max_bars + 1):
            if side > 0:
                stop_hit, take_hit = low_t[j] <= e - stop, high_t[j] >= e + take
            else:
                stop_hit, take_hit = high_t[j] >= e + stop, low_t[j] <= e - take
            if stop_hit:
                return False
            if take_hit:
                return True
        return False

    n = len(close_t)
    labels, valid = [], []
    for i in range(n):
        if i + max_bars >= n:
            labels.append(0)
            valid.append(False)
            continue
        long_wins, short_wins = wins(i, +1), wins(i, -1)
        labels.append(1 if long_wins and not short_wins else -1 if short_wins and not long_wins else 0)
        valid.append(True)
    return labels, valid


@pytest.mark.parametrize("take,stop,max_bars", [(4, 4, 5), (2, 6, 10), (6, 2, 8), (3, 5, 1), (1, 1, 3), (8, 8, 30)])
def test_vectorised_equals_reference_on_random_walks(take: int, stop: int, max_bars: int) -> None:
    rng = np.random.RandomState(20240601 + 7 * take + stop + max_bars)
    n = 1500
    close_t = np.cumsum(rng.randint(-2, 3, size=n))
    open_t = np.concatenate([[0], close_t[:-1]])
    high_t = np.maximum(open_t, close_t) + rng.randint(0, 3, size=n)
    low_t = np.minimum(open_t, close_t) - rng.randint(0, 3, size=n)
    labels, valid = triple_barrier_labels(5000.0 + high_t * TICK, 5000.0 + low_t * TICK, 5000.0 + close_t * TICK,
                                          tick_size=TICK,
                                          take_ticks=take, stop_ticks=stop, max_bars=max_bars)
    ref_labels, ref_valid = reference_labels(high_t.tolist(), low_t.tolist(), close_t.tolist(), take, stop, max_bars)
    assert labels.tolist() == ref_labels
    assert valid.tolist() == ref_valid
    assert {-1, 1} <= set(labels.tolist())       # the walk exercises both sides


# --- purged split -------------------------------------------------------------------------------

def check_split(n: int, train: np.ndarray, test: np.ndarray, start: int, purge: int, embargo: int) -> None:
    assert train.dtype.kind == "i" and test.dtype.kind == "i"
    assert len(train) and len(test)
    assert (np.diff(train) == 1).all() and (np.diff(test) == 1).all()      # time ordered, contiguous
    assert not set(train.tolist()) & set(test.tolist())
    assert train[0] == 0 and test[-1] == n - 1
    assert train[-1] < test[0]
    assert not ((train >= start - purge) & (train < start)).any()           # nothing within purge bars of the test start
    assert train[-1] == start - purge - 1 and test[0] == start + embargo


def test_purged_split_by_test_start() -> None:
    train, test = purged_time_split(100, test_start=70, purge=5, embargo=2)
    check_split(100, train, test, 70, 5, 2)
    assert len(train) == 65 and len(test) == 28


def test_purged_split_by_fraction() -> None:
    train, test = purged_time_split(1000, test_fraction=0.2, purge=10)
    check_split(1000, train, test, 800, 10, 0)
    train, test = purged_time_split(7, test_fraction=0.3, purge=1)        # round(2.1) = 2 test bars
    check_split(7, train, test, 5, 1, 0)


def test_purged_split_keeps_training_labels_out_of_the_test_period() -> None:
    max_bars = 6
    rng = np.random.RandomState(3)
    for _ in range(200):
        n = int(rng.randint(20, 300))
        start = int(rng.randint(max_bars + 1, n))
        embargo = int(rng.randint(0, 3))
        if start + embargo >= n:
            continue
        train, test = purged_time_split(n, test_start=start, purge=max_bars, embargo=embargo)
        check_split(n, train, test, start, max_bars, embargo)
        assert (train + max_bars < start).all()     # every training label's horizon ends before the test


@pytest.mark.parametrize("kwargs", [
    {"test_start": 50, "purge": -1},
    {"test_start": 50, "purge": 5, "embargo": -1},
    {"test_start": 0, "purge": 0},                      # empty train
    {"test_start": 100, "purge": 0},                    # empty test
    {"test_start": -5, "purge": 0},
    {"test_start": 10, "purge": 10},                    # purge eats the whole train
    {"test_start": 95, "purge": 5, "embargo": 5},       # embargo eats the whole test
    {"purge": 5},                                       # neither start nor fraction
    {"test_start": 50, "test_fraction": 0.5, "purge": 5},
    {"test_fraction": 0.0, "purge": 5},
    {"test_fraction": 1.0, "purge": 5},
    {"test_fraction": 0.001, "purge": 5},               # round(0.1) = 0 test bars
    {"test_start": 50.5, "purge": 5},
])
def test_purged_split_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        purged_time_split(100, **kwargs)


def test_purged_split_bad_n_raises() -> None:
    for n in (0, -3):
        with pytest.raises(ValueError):
            purged_time_split(n, test_start=1, purge=0)


# --- walk-forward -------------------------------------------------------------------------------

def test_walk_forward_windows_advance_and_do_not_overlap() -> None:
    n, tr, te, purge = 100, 30, 10, 5
    windows = list(walk_forward_splits(n, train=tr, test=te, purge=purge))
    assert len(windows) == 6                                   # s = 0, 10, ..., 50; s + 45 <= 100
    prev = None
    for train, test in windows:
        assert len(train) == tr and len(test) == te
        assert (np.diff(train) == 1).all() and (np.diff(test) == 1).all()
        assert train[-1] + purge + 1 == test[0]                # the purge gap, no overlap
        assert not set(train.tolist()) & set(test.tolist())
        assert test[-1] < n
        if prev is not None:
            assert train[0] == prev[0][0] + te and test[0] == prev[1][0] + te
            assert prev[1][-1] < test[0]                       # default step: test blocks tile
        prev = (train, test)


def test_walk_forward_custom_step() -> None:
    windows = list(walk_forward_splits(50, train=20, test=5, purge=2, step=3))
    starts = [int(train[0]) for train, _ in windows]
    assert starts == list(range(0, 50 - 27 + 1, 3))
    for train, test in windows:
        assert train[-1] < test[0] - 2


def test_walk_forward_exact_fit_and_bad_arguments() -> None:
    assert len(list(walk_forward_splits(15, train=10, test=3, purge=2))) == 1
    for kwargs in ({"train": 0, "test": 3, "purge": 2}, {"train": 10, "test": 0, "purge": 2},
                   {"train": 10, "test": 3, "purge": -1}, {"train": 10, "test": 3, "purge": 2, "step": 0},
                   {"train": 10, "test": 4, "purge": 2}):
        with pytest.raises(ValueError):
            walk_forward_splits(15, **kwargs)                 # raises at the call, before iteration
