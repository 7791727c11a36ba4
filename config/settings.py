"""Validated configuration: risk profile (one per Topstep account type), strategies, runtime, ProjectX.

Layers, later wins (:func:`load_config`):

1. ``config/profiles/<profile>.yaml`` (the risk profile; default ``combine-50k``);
2. an optional user YAML file with ``strategies:``, ``runtime:``, ``projectx:`` sections and a ``profile:``
   mapping of field overrides (example: ``config/default.yaml``);
3. an ``overrides`` nested dict (CLI flags, tests).

Everything is validated once at start (pydantic v2, unknown fields forbidden, models frozen); any
problem raises :class:`ConfigError` whose message starts with the offending field path, e.g.
``strategies.0.params.atr_multiplier: Input should be greater than 0``, and ends with the files
involved. Money is ``Decimal``. See docs/risk.md.

Numbers are refused when not finite (``.inf``, ``.nan``) or outside a sane range (runtime:
:class:`RuntimeParams`; strategy params: each kind's params model, e.g.
:class:`domain.strategies.grid.GridParams`), so a typo fails at load and never in a running actor.
An unquoted impossible date (``start: 2026-13-45``) is read as text and reported under its field;
YAML that cannot be read or parsed is reported naming the file. :func:`load_config` raises no
other exception type.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from domain.instruments import INSTRUMENTS
from domain.risk_rules import RiskLimits

CONFIG_DIR = Path(__file__).resolve().parent
PROFILES_DIR = CONFIG_DIR / "profiles"
DEFAULT_PROFILE = "combine-50k"
DEFAULT_CONFIG_FILE = CONFIG_DIR / "default.yaml"

Money = Annotated[Decimal, Field(gt=0)]
PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]

MAX_SPEED = 1_000_000.0
"""Largest replay speed factor accepted (about 11.6 trading days a second); ``"max"`` goes faster."""

_STRICT = ConfigDict(extra="forbid", frozen=True)


class ConfigError(Exception):
    """Invalid configuration. ``field`` is the dotted path of the first offending field (or the file)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# --------------------------------------------------------------------------- models


SWEEP_GUARD_FIELDS = ("sweep_atr_multiple", "sweep_min_ticks", "sweep_min_pct")
"""The :class:`RiskProfile` fields that set the sweep guard's distance; all None turns it off
(``domain.risk_rules.RiskLimits.sweep_guard``, docs/risk.md "Sweep guard")."""


class RiskProfile(BaseModel):
    """One Topstep account type plus our guardrails. ``None`` switches a rule off.

    ``sources`` maps a field name to where its number comes from (a Topstep help-center article,
    a section of docs/reference/topstep-rules.md or docs/reference/strategy-seeds.md, or the scaling
    rule we applied); every shipped profile documents every number.
    """

    model_config = _STRICT

    name: str
    description: str = ""
    account_size: PosInt
    starting_balance: Money
    mll_amount: Money
    profit_target: Money | None = None
    max_contracts_minis: Money
    dll: Money | None = None
    daily_loss_cap: Money | None = None
    trailing_kill_switch: Money | None = None
    session_loss_cap: Money | None = None
    open_risk_cap: Money | None = None
    per_trade_risk: Money | None = None
    net_exposure_cap: Money | None = None
    consecutive_loss_limit: Annotated[int, Field(ge=1)] | None = None
    stress_move_pct: Annotated[Decimal, Field(gt=0, le=20)] | None = None
    stress_loss_cap: Money | None = None
    personal_dll: Money | None = None
    personal_dll_mode: Literal["fixed", "trailing"] = "fixed"
    personal_dll_trail: Literal["unrealized", "realized"] = "unrealized"
    personal_dll_action: Literal["none", "liquidate", "liquidate_and_block"] = "none"
    consistency_share: Annotated[Decimal, Field(gt=0, le=1)] | None = None
    mll_trailing: Literal["eod", "intraday"] = "eod"
    sweep_atr_multiple: Annotated[Decimal, Field(gt=0, le=20)] | None = None
    sweep_min_ticks: Annotated[int, Field(ge=1, le=10_000)] | None = None
    sweep_min_pct: Annotated[Decimal, Field(gt=0, le=20)] | None = None
    flat_margin_s: Annotated[int, Field(ge=0, le=3600)] = 300
    sources: dict[str, str] = Field(default_factory=dict)

    @field_validator("sources")
    @classmethod
    def _sources_name_fields(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(cls.model_fields) - {"sources"})
        if unknown:
            raise ValueError(f"sources names unknown field(s): {', '.join(unknown)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "RiskProfile":
        if self.mll_amount >= self.starting_balance:
            raise ValueError(f"mll_amount: {self.mll_amount} must be below starting_balance {self.starting_balance}")
        # a personal limit above Topstep's MLL can never act: the MLL fails the account first
        for name in ("dll", "personal_dll", "daily_loss_cap", "session_loss_cap", "trailing_kill_switch"):
            v = getattr(self, name)
            if v is not None and v > self.mll_amount:
                raise ValueError(f"{name}: {v} is above the maximum loss limit mll_amount {self.mll_amount}: "
                                 f"the MLL would fail the account before this limit acts")
        return self

    def limits(self) -> RiskLimits:
        """The :class:`domain.risk_rules.RiskLimits` of this profile."""
        return RiskLimits(
            starting_balance=self.starting_balance,
            mll_amount=self.mll_amount,
            max_contracts_minis=self.max_contracts_minis,
            dll=self.dll,
            daily_loss_cap=self.daily_loss_cap,
            trailing_kill_switch=self.trailing_kill_switch,
            session_loss_cap=self.session_loss_cap,
            open_risk_cap=self.open_risk_cap,
            per_trade_risk=self.per_trade_risk,
            net_exposure_cap=self.net_exposure_cap,
            consecutive_loss_limit=self.consecutive_loss_limit,
            profit_target=self.profit_target,
            stress_move_pct=self.stress_move_pct,
            stress_loss_cap=self.stress_loss_cap,
            personal_dll=self.personal_dll,
            personal_dll_mode=self.personal_dll_mode,
            personal_dll_trail=self.personal_dll_trail,
            personal_dll_action=self.personal_dll_action,
            consistency_share=self.consistency_share,
            mll_trailing=self.mll_trailing,
            sweep_atr_multiple=self.sweep_atr_multiple,
            sweep_min_ticks=self.sweep_min_ticks,
            sweep_min_pct=self.sweep_min_pct,
        )


STRATEGY_NAME = r"^[A-Za-z][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*$"
RESERVED_NAMES = frozenset({"feed", "risk", "router", "broker", "reconciler", "watchdog", "emergency"})


class StrategyEntry(BaseModel):
    """One strategy to run: its own actor under the ``strategies`` supervisor, addressed by ``name``.

    ``kind`` names a module of :mod:`domain.strategies` (its ``PLUGIN``); ``instruments`` are the
    instruments it reads, in the order its kind defines (the grid: ``[MES]``; the hedge:
    ``[primary, hedge]``); ``params`` is validated against the kind's params model, so a wrong
    key or value is reported as ``strategies.<i>.params.<field>``.
    """

    model_config = _STRICT

    name: Annotated[str, Field(pattern=STRATEGY_NAME, max_length=24)]
    """Actor name and strategy id, the prefix of its client order ids (``{name}-{incarnation}-{seq}``)."""
    kind: str
    instruments: Annotated[tuple[str, ...], Field(min_length=1)]
    enabled: bool = True
    params: Any = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in RESERVED_NAMES or v.startswith("bars-"):
            raise ValueError(f"{v!r} is reserved for a system actor")
        return v

    @field_validator("instruments")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for sym in v:
            if sym not in INSTRUMENTS:
                raise ValueError(f"unknown instrument {sym!r}; known: {', '.join(sorted(INSTRUMENTS))}")
        return v

    @model_validator(mode="after")
    def _plugin(self) -> "StrategyEntry":
        from domain.strategies import load_plugin
        plugin = load_plugin(self.kind)
        lo, hi = plugin.instruments
        if not lo <= len(self.instruments) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise ValueError(f"instruments: kind {self.kind!r} takes {want} instrument(s), got {list(self.instruments)}")
        if not isinstance(self.params, plugin.params):
            if not isinstance(self.params, dict):
                raise ValueError(f"params: must be a mapping, got {type(self.params).__name__}")
            try:
                params = plugin.params.model_validate(self.params)
            except ValidationError as e:
                err = e.errors(include_url=False)[0]
                loc = ".".join(str(x) for x in err["loc"])
                msg = err["msg"].removeprefix("Value error, ")
                m = _FIELD_MSG.match(msg)
                if err["type"] == "value_error" and m:
                    loc, msg = (f"{loc}.{m.group(1)}" if loc else m.group(1)), m.group(2)
                elif "input" in err and not isinstance(err["input"], dict):
                    msg += f" (got {_short(err['input'])})"
                raise ValueError(f"params.{loc}: {msg}" if loc else f"params: {msg}") from None
            object.__setattr__(self, "params", params)
        return self

    def plugin(self) -> Any:
        """The :class:`domain.strategies.base.StrategyPlugin` of :attr:`kind`."""
        from domain.strategies import load_plugin
        return load_plugin(self.kind)


def _default_strategies() -> tuple[StrategyEntry, ...]:
    """The grid on MES and its MNQ hedge (seeds 000 and 001: docs/reference/strategy-seeds.md)."""
    return (StrategyEntry(name="grid-MES", kind="grid", instruments=("MES",)),
            StrategyEntry(name="hedge", kind="hedge", instruments=("MES", "MNQ")))


class RuntimeParams(BaseModel):
    """Process settings. ``redis_url`` None = the caller decides (env ``REDIS_URL``, else embedded).

    Numbers are bounded so that a typo cannot start a process that fails later: every float is
    finite (``.inf`` / ``.nan`` are refused), ``speed`` is at most :data:`MAX_SPEED`,
    ``heartbeat_s`` 0.05..60 s (the watchdog timer and the heartbeat key's TTL run on it),
    ``stale_data_s`` 1..86400 s, ``slippage_ticks`` at most 100.
    """

    model_config = _STRICT

    data_dir: Path = Path("data/demo")
    start: dt.date | None = None
    end: dt.date | None = None
    speed: float | Literal["max"] = 1440.0
    """Replay speed factor (1440 = one trading day per minute, at most :data:`MAX_SPEED`) or ``"max"``."""
    redis_url: str | None = None
    namespace: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S*[^\s:]$")] = "tsx:paper"
    """Redis key prefix: no whitespace, not ending in ``:``."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = 9108
    """0 = any free port, None = no metrics endpoint."""
    ops_port: Annotated[int, Field(ge=0, le=65535)] | None = 9109
    """The ops API and panel (infra/ops_api.py, docs/operations.md): 0 = any free port, None = off."""
    ops_host: str = "127.0.0.1"
    """Where the ops API listens; anything but localhost exposes it (POSTs still need OPS_TOKEN)."""
    log_dir: Path = Path("run/logs")
    session_files: bool = True
    """Per-day ``trading_<day>.log``, ``trades_<day>.csv``, ``metrics_<day>.json`` and the session
    report under ``{log_dir}/<backtest | namespace>/`` for a session started by ``supervisor.py``
    (infra/session_files.py); scripts that run many backtests (sweeps, walk-forward) write none."""
    run_dir: Path = Path("run")
    slippage_ticks: Annotated[int, Field(ge=0, le=100)] = 1
    slippage_by_tag: dict[str, Annotated[int, Field(ge=0, le=100)]] = Field(default_factory=dict)
    """Simulated venue: an order whose purpose contains a key slips that many ticks instead of
    ``slippage_ticks`` (first match), e.g. ``{"regime=crash": 3}`` (seed 002 section 2.9; the regime
    strategy tags its orders ``regime=<label>``)."""
    fill_on_touch: bool = False
    partial_fills: bool = False
    """Simulated venue: a fill on a replayed print is at most the print's size (contracts), the rest
    of the order stays working (infra/paper_broker.py). Off by default: orders fill whole."""
    max_price_age_s: Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)] = 5.0
    """The simulated venue never uses a last print older than this (event time, seconds) to judge an
    arriving order marketable (infra/paper_broker.py)."""
    bar_path: Literal["adaptive", "adverse"] = "adaptive"
    """Order of high and low inside a replayed bar (infra/replay.py ``bar_path``): ``adaptive``
    O-L-H-C on a bullish bar, O-H-L-C on a bearish one; ``adverse`` the extreme against the position
    held first (flat: the bar's direction first). A backtest also reports its net under the other
    path."""
    path_step_bp: Annotated[float, Field(ge=0.1, le=1000, allow_inf_nan=False)] | None = 4.0
    """Longest move between two replayed prints inside a bar, basis points of the bar's open
    (4 bp: ES ~2.5, NQ ~10 points): a longer move between two points of the bar's path is replayed
    as prints this far apart, so risk, stops and strategies meet a fast bar step by step as a live
    system meets it tick by tick (infra/replay.py, "Continuous path"). None = four prints a bar."""
    heartbeat_s: Annotated[float, Field(ge=0.05, le=60, allow_inf_nan=False)] = 1.0
    """Watchdog check / heartbeat period, seconds (0.05..60)."""
    stale_data_s: Annotated[float, Field(ge=1, le=86_400, allow_inf_nan=False)] = 30.0
    """Market data silent this long (wall seconds, in session) raises an alert (1..86400)."""
    record_ticks: bool = True
    """Paper on live data and live: the tick recorder writes the market hub's validated trades and
    quotes to daily gzip CSV files under ``record_ticks_dir``, one per instrument, kind and trading
    day, written every second (infra/tick_recorder.py; docs/operations.md, "Tick recording").
    Never in a replay or a backtest. ``--data`` on such a folder replays the recording."""
    record_ticks_dir: Path | None = None
    """Where the tick recorder writes; None = ``{run_dir}/ticks``."""

    @field_validator("speed", mode="before")
    @classmethod
    def _speed(cls, v: Any) -> float | str:
        if v == "max":
            return v
        try:
            f = float(v)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"speed must be a number > 0 or 'max' (got {_short(v)})") from None
        if isinstance(v, bool) or not (0 < f <= MAX_SPEED):
            raise ValueError(f"speed must be a finite number > 0 and <= {MAX_SPEED:g}, or 'max' (got {_short(v)})")
        return f

    @field_validator("data_dir", "log_dir", "run_dir", "record_ticks_dir")
    @classmethod
    def _path(cls, v: Path | None) -> Path | None:
        if v is not None and "\x00" in str(v):
            raise ValueError("path contains a NUL byte")
        return v

    @model_validator(mode="after")
    def _dates(self) -> "RuntimeParams":
        if self.start and self.end and self.end < self.start:
            raise ValueError(f"end: {self.end} is before start {self.start}")
        return self


DEFAULT_API_URL = "https://api.topstepx.com"
DEFAULT_RTC_URL = "https://rtc.topstepx.com"


class ProjectXParams(BaseModel):
    """Live mode: the ProjectX Gateway (TopstepX) connection and the safety switches.

    Credentials are *not* configuration: they come only from the environment
    (``PROJECTX_USERNAME``, ``PROJECTX_API_KEY``) and are never logged.
    """

    model_config = _STRICT

    base_url: Annotated[str, Field(pattern=r"^https?://\S+$")] = DEFAULT_API_URL
    """REST host (``/api/...`` is appended)."""
    rtc_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    """SignalR hubs host (``/hubs/user``, ``/hubs/market``). None: ``https://rtc.topstepx.com`` with
    the default ``base_url``, else the same host as ``base_url`` (the sandbox gateway serves both)."""
    account: Annotated[str, Field(min_length=1)] | None = None
    """Account name or numeric id; required in live mode."""
    armed: bool = False
    """Start armed (orders may reach the gateway). False: market data, state and reconciliation
    run but risk denies every strategy order (hold ``unarmed``) until armed."""
    confirm_funded: bool = False
    """Allow a funded account (``simulated: false``); without it only practice/Combine accounts run."""

    @property
    def hubs_url(self) -> str:
        """The effective hubs host (see :attr:`rtc_url`)."""
        if self.rtc_url is not None:
            return self.rtc_url
        return DEFAULT_RTC_URL if self.base_url.rstrip("/") == DEFAULT_API_URL else self.base_url


class AppConfig(BaseModel):
    """The whole configuration."""

    model_config = _STRICT

    profile: RiskProfile
    strategies: tuple[StrategyEntry, ...] = Field(default_factory=_default_strategies)
    runtime: RuntimeParams = Field(default_factory=RuntimeParams)
    projectx: ProjectXParams = Field(default_factory=ProjectXParams)

    @model_validator(mode="after")
    def _cross(self) -> "AppConfig":
        names = [s.name for s in self.strategies]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"strategies: duplicate name(s) {', '.join(dup)}")
        if not self.enabled_strategies():
            raise ValueError("strategies: no strategy enabled")
        limits = self.profile.limits()
        for i, s in enumerate(self.strategies):
            check = s.plugin().check
            if check is not None:
                try:
                    check(s.params, s.instruments, limits)
                except ValueError as e:
                    field = str(e).split(":", 1)[0]
                    where = "params." if field in type(s.params).model_fields else ""
                    raise ValueError(f"strategies.{i}.{where}{e}") from None
        return self

    def enabled_strategies(self) -> tuple[StrategyEntry, ...]:
        """The strategies that run, in config order (the order of their actors and subscriptions)."""
        return tuple(s for s in self.strategies if s.enabled)

    def instruments(self) -> tuple[str, ...]:
        """Every instrument an enabled strategy reads, in order of first mention."""
        return tuple(dict.fromkeys(sym for s in self.enabled_strategies() for sym in s.instruments))

    def canonical_json(self) -> str:
        """Sorted-key compact JSON; Decimals normalised (150 == 150.00), paths as strings."""
        return json.dumps(self.model_dump(mode="python"), sort_keys=True, separators=(",", ":"), default=_json_default)

    def config_hash(self) -> str:
        """First 12 hex digits of sha256(canonical JSON): identifies a configuration in logs/runs."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:12]


def _json_default(v: Any) -> Any:
    if isinstance(v, Decimal):
        n = v.normalize()
        return format(n, "f") if n == n.to_integral_value() else str(n)
    if isinstance(v, (Path, dt.date)):
        return str(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


# --------------------------------------------------------------------------- loading


def list_profiles() -> list[str]:
    """Names of the shipped profiles (``config/profiles/*.yaml`` stems), sorted."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose timestamps never raise: an unquoted impossible date
    (``start: 2026-13-45``) stays the string ``"2026-13-45"``, so validation reports it under its
    field path (``runtime.start: Input should be a valid date ...``) instead of a traceback."""


def _lenient_timestamp(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except (ValueError, OverflowError):
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _lenient_timestamp)


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    """Read a YAML mapping. Raises ConfigError naming the file (and the line for a syntax error)
    when it cannot be read, is not YAML or not a mapping; never another exception type."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, ValueError) as e:  # ValueError: NUL in the path, UnicodeDecodeError
        detail = getattr(e, "strerror", None) or e
        raise ConfigError(f"{path}: cannot read {what}: {detail}", field=str(path)) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML in {what}: {e}", field=str(path)) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # a constructor refused a value
        raise ConfigError(f"{path}: bad value in {what}: {type(e).__name__}: {e}", field=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {what} must be a YAML mapping, got {type(data).__name__}", field=str(path))
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: mappings merge, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _profile_layer(layer: Any, origin: str) -> dict[str, Any]:
    """A ``profile:`` override mapping; fields overridden without a source get ``override (origin)``."""
    if layer is None:
        return {}
    if not isinstance(layer, dict):
        raise ConfigError(f"profile: must be a mapping of profile field overrides ({origin}), "
                          f"got {type(layer).__name__}", field="profile")
    layer = dict(layer)
    srcs = layer.get("sources")
    srcs = dict(srcs) if isinstance(srcs, dict) else srcs
    if srcs is None or isinstance(srcs, dict):
        auto = {k: f"override ({origin})" for k in layer
                if k not in ("sources", "name", "description") and k in RiskProfile.model_fields}
        layer["sources"] = {**auto, **(srcs or {})}
    return layer


_FIELD_MSG = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*): (.*)$", re.S)


def _short(v: Any, limit: int = 80) -> str:
    """``repr(v)`` cut to ``limit`` characters (a fuzzed multi-megabyte value must not flood the message)."""
    r = repr(v)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _format_errors(e: ValidationError, origins: list[str]) -> ConfigError:
    """One ``<field.path>: <message>`` per error. Model-level validators put the field name at the
    start of their message (``"end: ..."``); it is joined onto the model's location."""
    parts: list[str] = []
    first: str | None = None
    for err in e.errors(include_url=False):
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        m = _FIELD_MSG.match(msg)
        if err["type"] == "value_error" and m:
            loc = f"{loc}.{m.group(1)}" if loc else m.group(1)
            msg = m.group(2)
        elif err["type"] not in ("missing", "value_error") and "input" in err and not isinstance(err["input"], dict):
            msg += f" (got {_short(err['input'])})"
        loc = loc or "<config>"
        first = first or loc
        parts.append(f"{loc}: {msg}")
    return ConfigError("; ".join(parts) + f" [config: {', '.join(origins)}]", field=first)


def load_config(path: Path | None = None, profile: str = DEFAULT_PROFILE,
                overrides: dict | None = None) -> AppConfig:
    """Load and validate the configuration (see the module docstring for the layers).

    Args:
        path: optional user YAML file (top-level keys ``profile``, ``strategies``, ``runtime``,
            ``projectx``); a ``strategies`` list replaces the default one whole.
        profile: profile name, one of :func:`list_profiles`.
        overrides: nested dict applied last, same shape as the user file.
    Raises:
        ConfigError: unknown profile, unreadable or malformed YAML, unknown or invalid field; the
            message names the field path (and the files involved).
    """
    known = list_profiles()
    if profile not in known:
        raise ConfigError(f"profile: unknown profile {profile!r}; known: {', '.join(known)}", field="profile")
    prof_path = PROFILES_DIR / f"{profile}.yaml"
    origins = [str(prof_path)]
    prof = _read_yaml(prof_path, f"profile {profile!r}")
    prof.setdefault("name", profile)
    data: dict[str, Any] = {"profile": prof}

    layers: list[tuple[dict[str, Any], str]] = []
    if path is not None:
        layers.append((_read_yaml(Path(path), "config file"), str(path)))
    if overrides:
        if not isinstance(overrides, dict):
            raise ConfigError(f"overrides: must be a dict, got {type(overrides).__name__}", field="overrides")
        layers.append((overrides, "overrides"))

    for layer, origin in layers:
        origins.append(origin)
        layer = dict(layer)
        for section in ("grid", "hedge"):
            if section in layer:
                raise ConfigError(f"{section}: not a section; the {section} is an entry of `strategies:` "
                                  f"(kind: {section}), see config/default.yaml [config: {origin}]", field=section)
        for section in ("runtime", "projectx"):
            if section in layer and layer[section] is None:
                layer[section] = {}
        if "profile" in layer:
            layer["profile"] = _profile_layer(layer["profile"], origin)
        data = _merge(data, layer)

    try:
        return AppConfig.model_validate(data)
    except ValidationError as e:
        raise _format_errors(e, origins) from None
