"""Metrics: private registry, helpers, and a real HTTP scrape of the endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from domain.messages import RiskState, StrategyStatus
from infra.metrics import Metrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value for every sample in an exposition text."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def served() -> Iterator[tuple[Metrics, int]]:
    m = Metrics()
    port = m.start_http_server(0)
    yield m, port
    m.stop_http_server()


def test_scrape_over_http(served: tuple[Metrics, int]) -> None:
    m, port = served
    assert port > 0
    m.pnl_net_dollars.set(-123.45)
    m.mll_headroom_dollars.set(1876.55)
    m.exposure_contracts.labels(instrument="MNQ").set(-3)
    m.exposure_contracts.labels(instrument="MES").set(2)
    m.fills_total.labels(instrument="MNQ").inc()
    m.fills_total.labels(instrument="MNQ").inc(2)
    m.orders_total.labels(outcome="denied").inc()
    m.actor_restarts_total.labels(actor="router").inc()
    m.inbox_depth.labels(actor="risk").set(7)
    m.rejected_inputs_total.labels(reason="crossed_quote").inc()
    m.open_orders.set(4)

    resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert resp.status_code == 200
    got = samples(resp.text)
    assert got[("tsx_pnl_net_dollars", ())] == pytest.approx(-123.45)
    assert got[("tsx_mll_headroom_dollars", ())] == pytest.approx(1876.55)
    assert got[("tsx_exposure_contracts", (("instrument", "MNQ"),))] == -3
    assert got[("tsx_exposure_contracts", (("instrument", "MES"),))] == 2
    assert got[("tsx_fills_total", (("instrument", "MNQ"),))] == 3
    assert got[("tsx_orders_total", (("outcome", "denied"),))] == 1
    assert got[("tsx_actor_restarts_total", (("actor", "router"),))] == 1
    assert got[("tsx_inbox_depth", (("actor", "risk"),))] == 7
    assert got[("tsx_rejected_inputs_total", (("reason", "crossed_quote"),))] == 1
    assert got[("tsx_open_orders", ())] == 4


def test_all_metric_names_present() -> None:
    text = Metrics().render().decode()
    names = {fam.name for fam in text_string_to_metric_families(text)}
    expected = {
        "tsx_pnl_realized_dollars", "tsx_pnl_unrealized_dollars", "tsx_pnl_net_dollars",
        "tsx_fees_dollars", "tsx_drawdown_dollars", "tsx_mll_headroom_dollars",
        "tsx_mll_floor_dollars", "tsx_equity_dollars", "tsx_exposure_contracts",
        "tsx_exposure_1atr_dollars", "tsx_open_orders", "tsx_atr_points", "tsx_hedge_ratio",
        "tsx_correlation", "tsx_grid_spacing_points", "tsx_risk_state", "tsx_inbox_depth",
        # counters: the parser reports the family name without "_total"
        "tsx_actor_restarts", "tsx_rejected_inputs", "tsx_fills", "tsx_orders",
    }
    expected |= {"strategy_pnl_dollars", "strategy_pnl_daily_dollars", "strategy_drawdown_dollars",
                 "strategy_exposure_contracts", "strategy_orders_open", "strategy_atr_points",
                 "strategy_correlation", "strategy_hedge_ratio",
                 "tsx_tick_to_decision_seconds", "tsx_order_round_trip_seconds"}
    assert expected <= names
    assert all(n.startswith(("tsx_", "strategy_")) for n in names)


def test_private_registries_do_not_collide() -> None:
    a, b = Metrics(), Metrics()  # would raise "Duplicated timeseries" on a shared registry
    a.open_orders.set(5)
    b.open_orders.set(1)
    assert samples(a.render().decode())[("tsx_open_orders", ())] == 5
    assert samples(b.render().decode())[("tsx_open_orders", ())] == 1
    assert REGISTRY.get_sample_value("tsx_open_orders") is None  # global registry untouched


def test_risk_state_and_strategy_status_helpers() -> None:
    m = Metrics()
    for state, value in ((RiskState.ACTIVE, 0), (RiskState.REDUCING, 1), ("HALTED", 2)):
        m.set_risk_state(state)
        assert m.registry.get_sample_value("tsx_risk_state") == value
    with pytest.raises(ValueError):
        m.set_risk_state("PANIC")

    m.observe_strategy_status(StrategyStatus("hedge", "MES", 1, atr=6.5, spacing=3.25,
                                             hedge_ratio=0.42, correlation=0.91))
    m.observe_strategy_status(StrategyStatus("grid", "MNQ", 2, atr=25.0, spacing=12.5))
    get = m.registry.get_sample_value
    assert get("tsx_atr_points", {"instrument": "MNQ"}) == 25.0
    assert get("tsx_atr_points", {"instrument": "MES"}) == 6.5
    assert get("tsx_grid_spacing_points", {"instrument": "MNQ"}) == 12.5
    assert get("tsx_hedge_ratio") == pytest.approx(0.42)  # not overwritten by the grid's 0.0
    assert get("tsx_correlation") == pytest.approx(0.91)


def test_http_server_lifecycle() -> None:
    m = Metrics()
    port = m.start_http_server(0, addr="127.0.0.1")
    with pytest.raises(RuntimeError):
        m.start_http_server(0)
    assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    # only /metrics: an ops-looking path is not answered "200 OK" with the metrics text
    for path in ("/ops/flatten", "/", "/metricsx"):
        r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
        assert r.status_code == 404 and "tsx_" not in r.text, path
    assert httpx.post(f"http://127.0.0.1:{port}/ops/flatten", timeout=5).status_code == 404
    m.stop_http_server()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    m.stop_http_server()  # idempotent


# --------------------------------------------------------------------------- per strategy (seed 001)

def _risk_with_trades():
    """Risk after grid-MES bought 2 MES, the hedge sold 1 MNQ, then risk's flatten closed both."""
    from decimal import Decimal as D

    from domain.calendar import SessionCalendar
    from domain.handler import CounterIds
    from domain.messages import Fill, Side, TradeTick
    from domain.risk import RiskManager
    from domain.risk_rules import RiskLimits
    import datetime as dt
    t = int(dt.datetime(2026, 4, 8, 15, 0, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000_000
    risk = RiskManager(RiskLimits(starting_balance=50_000, mll_amount=2_000, max_contracts_minis=5), CounterIds(),
                       SessionCalendar(), t)
    for f in (Fill("grid-MES-1-1", "grid-MES", "T1", "MES", Side.BUY, 2, D("5000.00"), D("0.74"), 0, t + 1),
              Fill("hedge-1-1", "hedge", "T2", "MNQ", Side.SELL, 1, D("20000.00"), D("0.37"), 0, t + 2)):
        risk.handle(f)
    risk.handle(TradeTick("MES", t + 3, D("5002.00"), 1))
    mid = risk.account_status()
    for f in (Fill("risk-1-1", "risk", "T3", "MES", Side.SELL, 2, D("5001.00"), D("0.74"), 0, t + 4),
              Fill("risk-1-2", "risk", "T4", "MNQ", Side.BUY, 1, D("20010.00"), D("0.37"), 0, t + 5)):
        risk.handle(f)
    return mid, risk.account_status()


def test_strategy_metrics_carry_the_strategy_label_and_read_zero_when_flat() -> None:
    mid, end = _risk_with_trades()
    m = Metrics()
    m.observe_strategies(mid)
    get = m.registry.get_sample_value
    assert get("strategy_exposure_contracts", {"strategy": "grid-MES", "instrument": "MES"}) == 2
    assert get("strategy_pnl_dollars", {"strategy": "grid-MES", "component": "unrealized"}) == 20.0  # 2 x 2 pts x $5
    m.observe_strategies(end)  # risk's flatten closed both: attributed to the holders
    assert get("strategy_exposure_contracts", {"strategy": "grid-MES", "instrument": "MES"}) == 0
    assert get("strategy_exposure_contracts", {"strategy": "hedge", "instrument": "MNQ"}) == 0
    assert get("strategy_pnl_dollars", {"strategy": "grid-MES", "component": "realized"}) == 10.0
    assert get("strategy_pnl_dollars", {"strategy": "hedge", "component": "realized"}) == -20.0  # 10 pts x $2
    # peak +19.26 (20 unrealized - 0.74 fees) -> +8.52 (10 realized - 1.48 fees)
    assert get("strategy_drawdown_dollars", {"strategy": "grid-MES"}) == pytest.approx(10.74)
    total = sum(get("strategy_pnl_dollars", {"strategy": s, "component": "total"}) for s in ("grid-MES", "hedge"))
    assert total == pytest.approx(float(end.realized - end.fees))  # adds up to the account
    assert get("strategy_orders_open", {"strategy": "hedge"}) == 0


def test_latency_probe_times_decisions_and_order_round_trips() -> None:
    from decimal import Decimal as D

    from domain.messages import Fill, OrderAccepted, OrderIntent, OrderType, Side, TradeTick
    from infra.metrics import LatencyProbe
    m = Metrics()
    probe = LatencyProbe(m)
    probe("bars:MES", TradeTick("MES", 100, D("5000.00"), 1))
    intent = OrderIntent("g-1-1", "grid-MES", "MES", Side.BUY, 1, OrderType.MARKET, 100)
    probe("risk", intent)                                      # decided on the tick at 100
    probe("risk", OrderIntent("g-1-2", "grid-MES", "MES", Side.BUY, 1, OrderType.MARKET, 200))  # not on a tick
    probe("broker", intent)
    probe("router", OrderAccepted("g-1-1", "grid-MES", "P-1", 101))
    probe("router", Fill("g-1-1", "grid-MES", "T1", "MES", Side.BUY, 1, D("5000.25"), D("0.37"), 0, 102))
    get = m.registry.get_sample_value
    assert get("tsx_tick_to_decision_seconds_count") == 1
    assert get("tsx_order_round_trip_seconds_count") == 1  # the first answer only


def test_the_exposition_passes_promtool() -> None:
    """``promtool check metrics`` (Prometheus's own linter: naming, units, help, types) finds
    nothing in a registry with every metric set. Skipped without promtool, unless
    ``REQUIRE_PROMTOOL=1`` (.ci/run installs Debian's prometheus package for it)."""
    import os
    import shutil
    import subprocess
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("REQUIRE_PROMTOOL") == "1":
            pytest.fail("REQUIRE_PROMTOOL=1 but promtool is not installed (apt-get install prometheus)")
        pytest.skip("promtool not installed (Debian package prometheus); .ci/run installs it")
    mid, end = _risk_with_trades()
    m = Metrics()
    m.observe_strategies(end)
    m.observe_strategy_status(StrategyStatus("hedge", "MNQ", 1, atr=25.0, hedge_ratio=0.7, correlation=0.9))
    m.tick_to_decision_seconds.observe(0.002)
    m.order_round_trip_seconds.observe(0.01)
    m.fills_total.labels(instrument="MES").inc()
    proc = subprocess.run([promtool, "check", "metrics"], input=m.render(), capture_output=True)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr
