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
    assert expected <= names
    assert all(n.startswith("tsx_") for n in names)


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
