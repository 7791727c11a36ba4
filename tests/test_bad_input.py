"""Bad input end to end: malformed config exits 2 naming the field; bad ticks are rejected, counted
and logged by the feed and never reach the bar builder, the venue or risk."""

from __future__ import annotations

from decimal import Decimal as D

from loguru import logger

import supervisor
from domain.handler import ticks_topic
from domain.messages import QuoteTick, TradeTick
from infra.feeds import FeedCore

T0 = 1_775_660_400_000_000_000  # 2026-04-08 10:00 CT


def test_malformed_config_exits_2_and_names_the_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategies:\n  - {name: grid-MES, kind: grid, instruments: [MES], params: {atr_multiplier: -1}}\n")
    assert supervisor.main(["--mode", "backtest", "--config", str(bad), "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "strategies.0.params.atr_multiplier" in err

    old = tmp_path / "old.yaml"
    old.write_text("grid:\n  levels_each_side: 3\n")
    assert supervisor.main(["--mode", "backtest", "--config", str(old), "--run-dir", str(tmp_path)]) == 2
    assert "grid: not a section" in capsys.readouterr().err

    kind = tmp_path / "kind.yaml"
    kind.write_text("strategies:\n  - {name: x, kind: martingale, instruments: [MES]}\n")
    assert supervisor.main(["--mode", "backtest", "--config", str(kind), "--run-dir", str(tmp_path)]) == 2
    assert "unknown strategy kind 'martingale'" in capsys.readouterr().err

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("risk:\n  nonsense: 1\n")
    assert supervisor.main(["--config", str(unknown), "--run-dir", str(tmp_path)]) == 2
    assert "risk" in capsys.readouterr().err

    assert supervisor.main(["--profile", "no-such-profile", "--run-dir", str(tmp_path)]) == 2
    assert supervisor.main(["--speed", "fast", "--run-dir", str(tmp_path)]) == 2


def test_feed_rejects_counts_and_logs_bad_ticks():
    core = FeedCore()
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING")
    try:
        good = TradeTick("MES", T0, D("6500.25"), 3, 0)
        bad = [
            TradeTick("MES", T0 + 1, D("NaN"), 1, 1),             # NaN price
            TradeTick("MES", T0 + 2, D("0"), 1, 2),                # zero price
            TradeTick("MES", T0 + 3, D("-6500.00"), 1, 3),         # negative price
            TradeTick("MES", T0 + 4, D("6500.10"), 1, 4),          # off the 0.25 tick grid
            TradeTick("ZZZ", T0 + 5, D("6500.00"), 1, 5),          # unknown instrument
            QuoteTick("MES", T0 + 6, D("6500.50"), D("6500.25")),  # crossed quote
        ]
        assert core.route(good)
        routed = [core.route(t) for t in bad]
        routed.append(core.route(good))                            # duplicate print
        routed.append(core.route(TradeTick("MES", T0 - 60_000_000_000, D("6500.00"), 1, 9)))  # out of order
    finally:
        logger.remove(sink)
    assert routed == [[]] * len(routed), "a bad tick was routed downstream"
    assert dict(core.rejected) == {"nan_price": 1, "non_positive_price": 2, "off_tick_price": 1,
                                   "unknown_instrument": 1, "crossed_quote": 1, "duplicate": 1,
                                   "out_of_order_ts": 1}
    assert len(lines) == 8 and all("feed rejected" in ln for ln in lines)
    assert any("crossed_quote" in ln and "QuoteTick MES" in ln for ln in lines)
    # after all that, a good tick still goes to the instrument's tick topic (venue, bar builder, risk)
    nxt = TradeTick("MES", T0 + 100, D("6500.50"), 1, 10)
    assert (ticks_topic("MES"), nxt) in core.route(nxt)
