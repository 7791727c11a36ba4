"""Market-data validation: each rejection reason, ordering and de-duplication."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from domain.messages import QuoteTick, TradeTick
from domain.validation import MarketDataValidator

T0 = 1_700_000_000_000_000_000


def tr(price="5000.25", size=1, ts=T0, seq=0, inst="MES") -> TradeTick:
    return TradeTick(inst, ts, price if not isinstance(price, str) else D(price), size, seq)


def qt(bid="5000.00", ask="5000.25", ts=T0, seq=0, inst="MES", bs=3, as_=4) -> QuoteTick:
    return QuoteTick(inst, ts, D(bid) if isinstance(bid, str) else bid, D(ask) if isinstance(ask, str) else ask,
                     bs, as_, seq)


def test_good_trade_accepted():
    v = MarketDataValidator()
    assert v.check_trade(tr()) is None
    assert v.accepted == 1 and sum(v.rejected.values()) == 0


@pytest.mark.parametrize("tick, reason", [
    (tr(inst="XYZ"), "unknown_instrument"),
    (tr(price=D("NaN")), "nan_price"),
    (tr(price=D("sNaN")), "nan_price"),
    (tr(price=D("Infinity")), "nan_price"),
    (tr(price=float("nan")), "nan_price"),
    (tr(price="0"), "non_positive_price"),
    (tr(price="-5000.25"), "non_positive_price"),
    (tr(price="5000.10"), "off_tick_price"),
    (tr(size=0), "non_positive_size"),
    (tr(size=-2), "non_positive_size"),
    (tr(price=None), "bad_type"),
    (tr(price="5000.25", size=True), "bad_type"),
    (tr(ts=-1), "bad_ts"),
])
def test_trade_reject_reasons(tick, reason):
    v = MarketDataValidator()
    assert v.check_trade(tick) == reason
    assert v.rejected[reason] == 1 and v.accepted == 0


def test_cl_tick_grid():
    v = MarketDataValidator()
    assert v.check_trade(tr(price="71.23", inst="CL")) is None
    assert v.check_trade(tr(price="71.235", inst="CL", ts=T0 + 1)) == "off_tick_price"


def test_trade_out_of_order_and_duplicate():
    v = MarketDataValidator()
    assert v.check_trade(tr(ts=T0 + 10)) is None
    assert v.check_trade(tr(ts=T0 + 10)) == "duplicate"
    assert v.check_trade(tr(ts=T0 + 9, seq=5)) == "out_of_order_ts"
    # same ns, different seq / price / size: several prints in one ns are fine
    assert v.check_trade(tr(ts=T0 + 10, seq=1)) is None
    assert v.check_trade(tr(ts=T0 + 10, seq=1, price="5000.50")) is None
    assert v.check_trade(tr(ts=T0 + 10, seq=1, price="5000.50", size=2)) is None
    # a rejected tick does not move the reference: the next good one is compared to the last accepted
    assert v.check_trade(tr(ts=T0 + 11, price="-1")) == "non_positive_price"
    assert v.check_trade(tr(ts=T0 + 10, seq=2)) is None
    # other instruments have their own ordering
    assert v.check_trade(tr(ts=T0, inst="MNQ", price="18000.00")) is None
    assert v.accepted == 6
    assert v.rejected == {"duplicate": 1, "out_of_order_ts": 1, "non_positive_price": 1}


def test_good_quote_accepted():
    v = MarketDataValidator()
    assert v.check_quote(qt()) is None
    assert v.check_quote(qt(bs=0, as_=0, ts=T0 + 1)) is None   # unknown sizes (0) are allowed
    assert v.accepted == 2


@pytest.mark.parametrize("q, reason", [
    (qt(inst="ZZ"), "unknown_instrument"),
    (qt(bid=D("NaN")), "nan_price"),
    (qt(ask=D("-Infinity")), "nan_price"),
    (qt(bid="0"), "non_positive_price"),
    (qt(bid="5000.05"), "off_tick_price"),
    (qt(bid="5000.25", ask="5000.00"), "crossed_quote"),
    (qt(bid="5000.25", ask="5000.25"), "crossed_quote"),
    (qt(bs=-1), "non_positive_size"),
])
def test_quote_reject_reasons(q, reason):
    v = MarketDataValidator()
    assert v.check_quote(q) == reason
    assert v.rejected[reason] == 1 and v.accepted == 0


def test_quote_out_of_order_and_duplicate_independent_of_trades():
    v = MarketDataValidator()
    assert v.check_quote(qt(ts=T0 + 5)) is None
    assert v.check_quote(qt(ts=T0 + 5)) == "duplicate"
    assert v.check_quote(qt(ts=T0 + 4)) == "out_of_order_ts"
    assert v.check_quote(qt(ts=T0 + 5, bs=9)) is None          # same ts, new size: fine
    assert v.check_trade(tr(ts=T0)) is None                     # trade stream is separate
    assert v.rejected["duplicate"] == 1 and v.rejected["out_of_order_ts"] == 1 and v.accepted == 3


def test_never_raises_on_garbage():
    v = MarketDataValidator()
    assert v.check_trade(TradeTick("MES", "yesterday", D("5000.25"), 1)) == "bad_ts"  # type: ignore[arg-type]
    assert v.check_trade(TradeTick("MES", T0, D("5000.25"), 1.5)) == "bad_type"       # type: ignore[arg-type]
    assert v.check_quote(QuoteTick("MES", T0, "x", D("1.00"))) == "bad_type"          # type: ignore[arg-type]
    assert v.check_trade(TradeTick(None, T0, D("5000.25"), 1)) == "unknown_instrument"     # type: ignore[arg-type]
    assert v.check_trade(None) == "bad_type"                                            # type: ignore[arg-type]
    assert v.rejected["bad_type"] == 3
