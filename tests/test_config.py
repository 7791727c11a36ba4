"""Configuration loading and validation (config/settings.py, config/profiles/*.yaml)."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest

from config.settings import (
    DEFAULT_CONFIG_FILE,
    AppConfig,
    ConfigError,
    RiskProfile,
    list_profiles,
    load_config,
)
from domain.risk_rules import RiskLimits
from domain.strategies.grid import GridParams


def grid_and_hedge(grid: dict | None = None, hedge: dict | None = None, hedge_instruments=("MES", "MNQ")) -> dict:
    """A ``strategies`` override: the default grid and hedge with these params."""
    return {"strategies": [
        {"name": "grid-MES", "kind": "grid", "instruments": ["MES"], "params": grid or {}},
        {"name": "hedge", "kind": "hedge", "instruments": list(hedge_instruments), "params": hedge or {}},
    ]}

NUMERIC_FIELDS = ("account_size", "starting_balance", "mll_amount", "profit_target", "max_contracts_minis", "dll",
                  "daily_loss_cap", "trailing_kill_switch", "session_loss_cap", "open_risk_cap", "per_trade_risk",
                  "net_exposure_cap", "consecutive_loss_limit", "flat_margin_s")


def test_list_profiles():
    assert list_profiles() == ["combine-100k", "combine-150k", "combine-50k", "practice-150k"]


@pytest.mark.parametrize("name", ["combine-50k", "combine-100k", "combine-150k", "practice-150k"])
def test_every_profile_loads_with_a_source_for_every_number(name):
    cfg = load_config(profile=name)
    p = cfg.profile
    assert p.name == name
    for f in NUMERIC_FIELDS:
        assert p.sources.get(f), f"{name}: no source for {f}"
    lim = p.limits()
    assert isinstance(lim, RiskLimits) and lim.starting_balance == p.starting_balance
    # Our guardrails are stricter than Topstep's MLL, and the grid's R fits the per-trade cap.
    assert p.daily_loss_cap < p.mll_amount and p.trailing_kill_switch < p.mll_amount
    assert p.session_loss_cap < p.daily_loss_cap
    assert cfg.strategies[0].params.risk_per_lot <= p.per_trade_risk <= p.open_risk_cap


@pytest.mark.parametrize("name,size,target,mll,minis,daily,trail,sess,ptr,orc,net", [
    ("combine-50k", 50000, 3000, 2000, 5, 400, 1600, 200, 150, 300, 1200),
    ("combine-100k", 100000, 6000, 3000, 10, 600, 2400, 300, 300, 600, 2400),
    ("combine-150k", 150000, 9000, 4500, 15, 900, 3600, 450, 450, 900, 3600),
    ("practice-150k", 150000, None, 4500, 15, 900, 1800, 450, 150, 300, 1200),
])
def test_profile_numbers(name, size, target, mll, minis, daily, trail, sess, ptr, orc, net):
    p = load_config(profile=name).profile
    assert p.account_size == size and p.starting_balance == D(size)
    assert p.profit_target == (None if target is None else D(target))
    assert (p.mll_amount, p.max_contracts_minis) == (D(mll), D(minis))
    assert p.dll is None
    assert (p.daily_loss_cap, p.trailing_kill_switch, p.session_loss_cap) == (D(daily), D(trail), D(sess))
    assert (p.per_trade_risk, p.open_risk_cap, p.net_exposure_cap) == (D(ptr), D(orc), D(net))
    assert p.consecutive_loss_limit == 5 and p.flat_margin_s == 300
    if name.startswith("combine"):
        # Scaling rules of docs/risk.md.
        assert p.daily_loss_cap == p.mll_amount * D("0.20")
        assert p.trailing_kill_switch == p.mll_amount * D("0.80")
        assert p.session_loss_cap == p.daily_loss_cap * D("0.50")
        assert p.per_trade_risk == D(size) * D("0.003")
        assert p.open_risk_cap == max(p.daily_loss_cap * D("0.30"), 2 * p.per_trade_risk)
        assert p.net_exposure_cap == D(1200) * D(size) / D(50000)


def test_defaults_and_default_yaml_agree():
    a = load_config()
    assert a.profile.name == "combine-50k"
    grid, hedge = a.strategies
    g = grid.params
    assert (grid.name, grid.kind, grid.instruments) == ("grid-MES", "grid", ("MES",))
    assert (g.levels_each_side, g.atr_period, g.atr_bar_s, g.atr_multiplier) == (5, 14, 900, 0.45)
    assert g.risk_per_lot == D(150) and g.take_profit_atr == 0.5 and g.max_lot == 3
    assert (hedge.kind, hedge.instruments, hedge.enabled) == ("hedge", ("MES", "MNQ"), True)
    assert a.instruments() == ("MES", "MNQ") and [e.name for e in a.enabled_strategies()] == ["grid-MES", "hedge"]
    assert a.runtime.speed == 1440 and a.runtime.namespace == "tsx:paper" and a.runtime.metrics_port == 9108
    assert a.runtime.data_dir == Path("data/demo")
    b = load_config(DEFAULT_CONFIG_FILE)
    assert a == b and a.config_hash() == b.config_hash()
    assert len(a.config_hash()) == 12 and int(a.config_hash(), 16) >= 0


def test_config_hash_changes_with_content_not_decimal_spelling():
    a = load_config()
    assert load_config(overrides=grid_and_hedge({"levels_each_side": 6})).config_hash() != a.config_hash()
    assert load_config(overrides=grid_and_hedge({"risk_per_lot": "150.00"})).config_hash() == a.config_hash()


def test_user_file_and_overrides(tmp_path):
    f = tmp_path / "user.yaml"
    f.write_text(
        "profile:\n"
        "  dll: 1000\n"
        "  daily_loss_cap: 300\n"
        "  sources:\n"
        "    dll: chosen at checkout\n"
        "strategies:\n"
        "  - name: grid-MES\n"
        "    kind: grid\n"
        "    instruments: [MES]\n"
        "    params: {levels_each_side: 3}\n"
        "runtime:\n"
        "  speed: max\n"
        "  start: 2025-03-03\n"
        "  metrics_port: null\n"
    )
    cfg = load_config(f, profile="combine-100k",
                      overrides={"profile": {"daily_loss_cap": 250}})
    p = cfg.profile
    assert p.name == "combine-100k" and p.mll_amount == D(3000)
    assert p.dll == D(1000) and p.sources["dll"] == "chosen at checkout"
    assert p.daily_loss_cap == D(250) and p.sources["daily_loss_cap"] == "override (overrides)"
    (grid,) = cfg.strategies  # a strategies list replaces the default one whole
    assert grid.params.levels_each_side == 3 and grid.params.atr_multiplier == 0.45 and cfg.instruments() == ("MES",)
    assert cfg.runtime.speed == "max" and cfg.runtime.metrics_port is None
    assert str(cfg.runtime.start) == "2025-03-03"
    assert p.limits().dll == D(1000)
    # A guardrail can be switched off.
    off = load_config(overrides={"profile": {"session_loss_cap": None}})
    assert off.profile.session_loss_cap is None and off.profile.limits().session_loss_cap is None


def test_models_are_frozen_and_strict():
    cfg = load_config()
    with pytest.raises(Exception):
        cfg.strategies[0].params.levels_each_side = 7  # type: ignore[misc]
    with pytest.raises(Exception):
        GridParams(bogus=1)  # type: ignore[call-arg]
    assert isinstance(cfg, AppConfig) and isinstance(cfg.profile, RiskProfile)


@pytest.mark.parametrize("overrides,field,fragment", [
    (grid_and_hedge({"atr_multiplier": 0}), "strategies.0.params.atr_multiplier", "greater than 0"),
    (grid_and_hedge({"levels_each_side": 21}), "strategies.0.params.levels_each_side", "less than or equal to 20"),
    (grid_and_hedge({"levels_each_side": "five"}), "strategies.0.params.levels_each_side", "valid integer"),
    (grid_and_hedge({"bogus": 1}), "strategies.0.params.bogus", "Extra inputs"),
    (grid_and_hedge(hedge={"min_ratio": 2}), "strategies.1.params.min_ratio", "max_ratio"),
    (grid_and_hedge(hedge_instruments=("MES", "MES")), "strategies.1.instruments", "differ"),
    (grid_and_hedge(hedge_instruments=("MES",)), "strategies.1.instruments", "takes 2 instrument"),
    ({"strategies": [{"name": "g", "kind": "grid", "instruments": ["ZZ"]}]}, "strategies.0.instruments",
     "unknown instrument"),
    ({"strategies": [{"name": "risk", "kind": "grid", "instruments": ["MES"]}]}, "strategies.0.name", "reserved"),
    ({"strategies": [{"name": "g", "kind": "grid", "instruments": ["MES"]}] * 2}, "strategies", "duplicate"),
    ({"strategies": [{"name": "g", "kind": "grid", "instruments": ["MES"], "enabled": False}]}, "strategies",
     "no strategy enabled"),
    ({"strategies": [{"name": "g", "kind": "nope", "instruments": ["MES"]}]}, "strategies.0", "unknown strategy kind"),
    ({"grid": {"levels_each_side": 3}}, "grid", "not a section"),
    ({"runtime": {"speed": "fast"}}, "runtime.speed", "'max'"),
    ({"runtime": {"speed": 0}}, "runtime.speed", "> 0"),
    ({"runtime": {"start": "2025-03-05", "end": "2025-03-01"}}, "runtime.end", "before start"),
    ({"profile": {"dll": "a lot"}}, "profile.dll", "decimal"),
    ({"profile": {"daily_loss_cap": -5}}, "profile.daily_loss_cap", "greater than 0"),
    ({"profile": {"mll": 100}}, "profile.mll", "Extra inputs"),
    ({"profile": {"sources": {"typo_field": "x"}}}, "profile.sources", "typo_field"),
    ({"profile": {"per_trade_risk": 100}}, "strategies.0.params.risk_per_lot", "per_trade_risk"),
    ({"unknown_section": {}}, "unknown_section", "Extra inputs"),
])
def test_invalid_values_name_the_field(overrides, field, fragment):
    with pytest.raises(ConfigError) as ei:
        load_config(overrides=overrides)
    msg = str(ei.value)
    assert msg.startswith(f"{field}: "), msg
    assert fragment in msg and ei.value.field == field


def test_bad_yaml_and_bad_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategies:\n  - {name: g, kind: grid, instruments: [MES\n")
    with pytest.raises(ConfigError) as ei:
        load_config(bad)
    assert str(bad) in str(ei.value) and "malformed YAML" in str(ei.value)

    notmap = tmp_path / "list.yaml"
    notmap.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(notmap)

    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")

    wrong_type = tmp_path / "wrong.yaml"
    wrong_type.write_text("runtime:\n  heartbeat_s: soon\n")
    with pytest.raises(ConfigError) as ei:
        load_config(wrong_type)
    assert str(ei.value).startswith("runtime.heartbeat_s: ") and str(wrong_type) in str(ei.value)

    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert load_config(empty) == load_config()


def test_unknown_profile():
    with pytest.raises(ConfigError) as ei:
        load_config(profile="combine-75k")
    assert ei.value.field == "profile" and "combine-50k" in str(ei.value)
    with pytest.raises(ConfigError):
        load_config(profile="../profiles/combine-50k")
