"""Fuzzed bad input: mutated configs, corrupted bar files and malformed hub payloads.

Every case must end in a documented way, never in an uncaught exception:

- configs (``config.settings.load_config``, overrides and YAML files): an :class:`AppConfig` or a
  :class:`ConfigError` whose message starts with the field path or the file; a sample also goes
  through ``supervisor.main([... "--mode", "backtest" ...])`` in-process: exit code 0 (and a printed
  summary) or 2 (and a message on stderr), never 1 or a traceback;
- bar files made from data/demo (truncated, flipped bytes, huge/NaN/negative numbers, wrong symbols,
  shuffled times...): ``infra.replay.load_bar_csv`` returns rows plus a Counter that accounts for
  every record (kept + dropped == records) or raises ``BadDataFile`` (a ValueError naming the file);
  a sample is backtested from a tmp data dir (exit 0 or 2);
- hub payloads through the mapping functions of ``infra.projectx.mapping``: a value or
  ``MalformedPayload``; the ticks then go through ``MarketDataValidator`` (never raises, accepted
  prices plausible).

Fixed seed; the counts per kind are printed (``pytest -s``) and asserted. About 15-25 s.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import gzip
import io
import math
import random
import shutil
import traceback
from decimal import Decimal
from pathlib import Path

import yaml

import supervisor
from config.settings import AppConfig, ConfigError, load_config
from domain.messages import QuoteTick, TradeTick
from domain.validation import MarketDataValidator, plausible_range
from infra.projectx import mapping as m
from infra.projectx.errors import MalformedPayload
from infra.replay import BadDataFile, load_bar_csv

SEED = 20260408
DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
DAY = ["--start", "2026-04-09", "--end", "2026-04-09"]  # one trading day keeps a backtest under 1 s

BAD_NUMBERS = [float("inf"), float("-inf"), float("nan"), 1e300, -1e300, 1e308, 0, -1, -0.0, 2 ** 70, 10 ** 100,
               "", "abc", "1e999", "nan", ".inf", None, True, False, [], {}, [1, 2], {"a": 1}, "x" * 5000,
               1.5, 3, 0.01, 1e-300, "2026-13-45", "max"]
SANE = {"runtime": {"speed": [1, 1440, "max", 1e6], "heartbeat_s": [0.05, 1, 60], "stale_data_s": [1, 30],
                    "slippage_ticks": [0, 1, 5], "fill_on_touch": [True, False], "start": ["2026-04-09"],
                    "end": ["2026-04-09"], "namespace": ["tsx:fuzz"], "metrics_port": [0, None]},
        "grid": {"atr_multiplier": [0.2, 0.45, 2], "take_profit_atr": [0.3, 1], "levels_each_side": [1, 5, 20],
                 "pyramid_alpha": [0, 0.5], "max_lot": [1, 3], "surge_ratio": [1.5, 3], "risk_per_lot": [50, 150],
                 "atr_period": [5, 14], "atr_bar_s": [300, 900], "min_spacing_ticks": [1, 8],
                 "rebuild_shift_spacings": [0.5, 2], "surge_lot_factor": [0.5, 1], "surge_spacing_factor": [1, 2],
                 "surge_ema_bars": [5, 20], "recalc_interval_s": [30, 60]},
        "hedge": {"activation_spacings": [1, 3], "min_ratio": [0.5], "max_ratio": [1.25, 2], "window": [20, 100],
                  "bar_s": [60], "low_corr": [-1, 0.6, 1], "low_corr_minutes": [5, 15.5], "low_corr_factor": [0.5, 1],
                  "rebalance_band": [0, 1], "min_hold_s": [0, 600]},
        "ema_cross": {"fast": [5, 10], "slow": [20, 30], "qty": [1, 2], "bar_s": [60, 120], "seed": ["sma", "first"]}}
PROFILE_FIELDS = ["daily_loss_cap", "per_trade_risk", "consecutive_loss_limit", "stress_move_pct", "flat_margin_s",
                  "open_risk_cap", "max_contracts_minis"]


def _strategy(rng: random.Random, kind: str, params: dict) -> dict:
    inst = {"grid": ["MES"], "hedge": ["MES", "MNQ"], "ema_cross": [rng.choice(["MES", "MNQ", "NQ"])]}[kind]
    return {"name": f"{kind.replace('_', '-')}-x", "kind": kind, "instruments": inst, "params": params}


def mutated_overrides(rng: random.Random) -> dict:
    """A config overrides dict: sane values plus 1-3 fields set to a random bad (or sane) value."""
    kind = rng.choice(["grid", "hedge", "ema_cross"])
    params = {k: rng.choice(v) for k, v in rng.sample(sorted(SANE[kind].items()), 3)}
    runtime = {"start": "2026-04-09", "end": "2026-04-09", "metrics_port": None}
    profile: dict = {}
    for _ in range(rng.randint(1, 3)):
        where = rng.choice(["params", "params", "runtime", "runtime", "profile", "strategy"])
        value = rng.choice(BAD_NUMBERS) if rng.random() < 0.85 else None
        if where == "params" and isinstance(params, dict):
            key = rng.choice(sorted(SANE[kind]) + ["bogus"])
            params[key] = value if value is not None else rng.choice(SANE[kind].get(key, [1]))
        elif where == "runtime":
            key = rng.choice(sorted(SANE["runtime"]) + ["data_dir", "run_dir"])
            runtime[key] = value if value is not None else rng.choice(SANE["runtime"].get(key, ["x"]))
        elif where == "profile":
            profile[rng.choice(PROFILE_FIELDS)] = value
        elif where == "strategy":
            params = rng.choice(BAD_NUMBERS)  # params not a mapping at all
    out = {"strategies": [_strategy(rng, kind, params)], "runtime": runtime}
    if profile:
        out["profile"] = profile
    return out


YAML_SNIPPETS = [
    "runtime: {start: 2026-13-45}\n", "runtime: {start: 2026-02-30}\n", "runtime: {end: 0000-01-01}\n",
    "runtime: {heartbeat_s: .inf}\n", "runtime: {heartbeat_s: 1e308}\n", "runtime: {stale_data_s: .nan}\n",
    "runtime: {speed: .inf}\n", "runtime: {speed: -.inf}\n", "runtime:\n  speed: [1, 2]\n",
    "strategies: [{name: grid-MES, kind: grid, instruments: [MES], params: {atr_multiplier: .inf}}]\n",
    "strategies: [{name: grid-MES, kind: grid, instruments: [MES], params: {atr_multiplier: 1.0e+300}}]\n",
    "strategies: [{name: grid-MES, kind: grid, instruments: [MES], params: {take_profit_atr: .inf}}]\n",
    "strategies: [{name: grid-MES, kind: grid, instruments: [MES], params: {risk_per_lot: .nan}}]\n",
    "strategies: [{name: hedge, kind: hedge, instruments: [MES, MNQ], params: {low_corr_minutes: .inf}}]\n",
    "strategies: [{name: e, kind: ema_cross, instruments: [NQ], params: {fast: 99999999999999999999999}}]\n",
    "strategies: !!binary AAAA\n", "runtime: {start: !!timestamp 2026-99-99}\n", "runtime: [\n",
    "\t- tab\n", "- a list\n", "just a string\n", "runtime: {data_dir: \"a\\0b\"}\n", "? [a, b]\n: c\n",
    "runtime: &a {x: *a}\n", "profile: 3\n", "profile: {daily_loss_cap: .inf}\n", "\xff\xfe",
]


def check_config_outcome(fn) -> str:
    """Run ``fn``; 'ok' (an AppConfig) or 'error' (ConfigError naming a field or file); anything else fails."""
    try:
        cfg = fn()
    except ConfigError as e:
        msg = str(e)
        assert e.field and msg, msg
        assert msg.split(":", 1)[0].strip(), msg
        assert len(msg) < 4000, "error message floods"
        return "error"
    assert isinstance(cfg, AppConfig)
    for name in ("heartbeat_s", "stale_data_s"):
        assert math.isfinite(getattr(cfg.runtime, name))
    for s in cfg.strategies:
        for k, v in s.params.model_dump().items():
            if isinstance(v, (float, Decimal)):
                assert math.isfinite(v) and abs(v) <= 1e6, f"{s.kind}.{k} = {v} accepted"
    return "ok"


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = supervisor.main(argv)
    return rc, out.getvalue(), err.getvalue()


def check_main(argv: list[str]) -> int:
    rc, out, err = run_main(argv)
    assert rc in (0, 2), f"exit {rc} for {argv}: {err[-2000:]}"
    assert "Traceback" not in err, err[-2000:]
    if rc == 0:
        assert "session summary" in out and "actor restarts: none" in out, out[-2000:]
    else:
        assert "error" in err, err[-2000:]
    return rc


# --------------------------------------------------------------------------- bar files

def demo_lines(name: str) -> list[str]:
    return gzip.decompress((DEMO / name).read_bytes()).decode().splitlines()


def corrupt_bar_file(rng: random.Random, lines: list[str]) -> tuple[str, bytes]:
    """(mutation name, file bytes as .csv.gz)."""
    header, rows = lines[0], list(lines[1:])
    kind = rng.choice(["truncate", "flip_gz", "flip_text", "numbers", "numbers", "symbol", "shuffle", "duplicate",
                       "empty", "header_only", "not_gzip", "drop_column", "garbage_rows", "huge_field"])

    def pack(text_rows: list[str], hdr: str = header) -> bytes:
        return gzip.compress(("\n".join([hdr, *text_rows]) + "\n").encode(), mtime=0)

    if kind == "truncate":
        raw = pack(rows)
        return kind, raw[:rng.randint(0, len(raw) - 1)]
    if kind == "flip_gz":
        raw = bytearray(pack(rows))
        for _ in range(rng.randint(1, 5)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        return kind, bytes(raw)
    if kind == "flip_text":
        text = bytearray(("\n".join([header, *rows]) + "\n").encode())
        for _ in range(rng.randint(1, 50)):
            text[rng.randrange(len(header) + 1, len(text))] = rng.randrange(256)
        return kind, gzip.compress(bytes(text), mtime=0)
    if kind == "numbers":
        bad = ["1e30", "NaN", "-6500", "0", "inf", "-inf", "2361183241434822606848", "1e999999", "sNaN", "",
               "6500.1", "abc", "-1", "1e-30", "99999999999999999999999999999999"]
        for _ in range(rng.randint(1, 40)):
            i = rng.randrange(len(rows))
            f = rows[i].split(",")
            f[rng.randint(1, 5)] = rng.choice(bad)
            rows[i] = ",".join(f)
        return kind, pack(rows)
    if kind == "symbol":
        for _ in range(rng.randint(1, 40)):
            i = rng.randrange(len(rows))
            rows[i] = rows[i].rsplit(",", 1)[0] + "," + rng.choice(["NQ", "CL", "ZZZ", "", "NQ=F", "ESM6", "es"])
        return kind, pack(rows)
    if kind == "shuffle":
        k = rng.randint(2, 200)
        i = rng.randrange(len(rows) - k)
        seg = rows[i:i + k]
        rng.shuffle(seg)
        rows[i:i + k] = seg
        return kind, pack(rows)
    if kind == "duplicate":
        for _ in range(rng.randint(1, 40)):
            i = rng.randrange(len(rows))
            rows.insert(i, rows[i])
        return kind, pack(rows)
    if kind == "empty":
        return kind, gzip.compress(b"", mtime=0)
    if kind == "header_only":
        return kind, pack([])
    if kind == "not_gzip":
        return kind, ("\n".join([header, *rows[:50]]) + "\n").encode()
    if kind == "drop_column":
        cols = header.split(",")
        j = rng.randrange(len(cols))
        return kind, pack([",".join(c for n, c in enumerate(r.split(",")) if n != j) for r in rows],
                          ",".join(c for n, c in enumerate(cols) if n != j))
    if kind == "garbage_rows":
        for _ in range(rng.randint(1, 20)):
            rows.insert(rng.randrange(len(rows)), rng.choice(["", ",,,,,,", "a,b", "2026-04-08 10:00:00",
                                                               "9999-99-99 99:99:99,1,1,1,1,1,ES", "\x00\x00"]))
        return kind, pack(rows)
    # huge_field: one field longer than the csv module's limit
    i = rng.randrange(len(rows))
    rows[i] = rows[i] + "," + "9" * 200_000
    return kind, pack(rows)


def count_records(path: Path) -> int | None:
    """Number of records a DictReader yields, or None if the file is unreadable as CSV."""
    try:
        with io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="") as fh:
            return sum(1 for _ in csv.DictReader(fh))
    except Exception:  # noqa: BLE001 - only a reference count
        return None


def check_bar_load(path: Path, instrument: str) -> str:
    try:
        rows, rejects = load_bar_csv(path, instrument=instrument)
    except BadDataFile as e:
        assert str(path) in str(e), str(e)
        return "bad_file"
    n = count_records(path)
    assert n is not None, "load_bar_csv read a file the csv module cannot"
    assert len(rows) + sum(rejects.values()) == n, f"{n} records, {len(rows)} kept, dropped {dict(rejects)}"
    lo, hi = plausible_range(instrument)
    for r in rows:
        assert r.instrument == instrument and lo <= r.low <= r.high <= hi and r.volume >= 0
    assert all(a.start_ns < b.start_ns for a, b in zip(rows, rows[1:]))
    return "loaded"


# --------------------------------------------------------------------------- hub payloads

GOOD_QUOTE = {"symbol": "F.US.MES", "bestBid": 6500.25, "bestAsk": 6500.5, "lastPrice": 6500.25,
              "timestamp": "2026-04-08T15:00:00.123456+00:00"}
GOOD_TRADE = {"symbolId": "F.US.MES", "price": 6500.25, "timestamp": "2026-04-08T15:00:00.5+00:00", "type": 0,
              "volume": 2}
GOOD_ORDER = {"id": 101, "accountId": 7, "contractId": "CON.F.US.MES.M26", "creationTimestamp": "2026-04-08T15:00:00Z",
              "updateTimestamp": "2026-04-08T15:00:01Z", "status": 1, "type": 1, "side": 0, "size": 2,
              "limitPrice": 6500.25, "stopPrice": None, "fillVolume": 0, "filledPrice": None,
              "customTag": "grid-MES-1-3"}
GOOD_FILL = {"id": 9001, "accountId": 7, "contractId": "CON.F.US.MES.M26", "creationTimestamp": "2026-04-08T15:00:02Z",
             "price": 6500.25, "profitAndLoss": None, "fees": 0.37, "side": 0, "size": 1, "voided": False,
             "orderId": 101}
GOOD_POSITION = {"id": 5, "accountId": 7, "contractId": "CON.F.US.MES.M26", "creationTimestamp": "2026-04-08T15:00:02Z",
                 "type": 1, "size": 1, "averagePrice": 6500.25}
GOOD_BAR = {"t": "2026-04-08T15:00:00Z", "o": 6500.25, "h": 6501, "l": 6500, "c": 6500.5, "v": 10}
GOOD_DEPTH = {"timestamp": "2026-04-08T15:00:00Z", "type": 1, "price": 6500.25, "volume": 3, "currentVolume": 3}
GOOD_ACCOUNT = {"id": 7, "name": "PRAC", "balance": 50000, "canTrade": True, "isVisible": True, "simulated": True}
GOOD_CONTRACT = {"id": "CON.F.US.MES.M26", "name": "MESM6", "description": "Micro E-mini", "tickSize": 0.25,
                 "tickValue": 1.25, "activeContract": True, "symbolId": "F.US.MES"}

HUB_BAD = [1e308, -1e308, float("nan"), float("inf"), -1, 0, -0.0, 2 ** 70, 10 ** 400, Decimal("1e999999"),
           Decimal("sNaN"), "1e308", "NaN", "Infinity", "-5", "", " ", "x" * 100_000, "9" * 5000, "²", True, None,
           [], {}, [1], {"a": 1}, 6500.1, "6500.25", 6500.25, "2026-13-45T00:00:00Z", "99999999999999999999",
           "2026-04-08T15:00:00+99:99", "0000-01-01T00:00:00Z", 3.5, -2 ** 70, object()]


def mutate_payload(rng: random.Random, good: dict) -> object:
    if rng.random() < 0.05:
        return rng.choice(HUB_BAD)  # not an object at all
    obj = dict(good)
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(sorted(obj) + ["extra"])
        if rng.random() < 0.2:
            obj.pop(key, None)
        else:
            obj[key] = rng.choice(HUB_BAD)
    return obj


def check_hub_payload(rng: random.Random, validator: MarketDataValidator, seq: int) -> str:
    which = rng.choice(["quote", "trade", "order", "fill", "position", "bar", "depth", "account", "contract"])
    tick_size = Decimal("0.25")
    try:
        if which == "quote":
            q = m.quote_to_tick("MES", tick_size, mutate_payload(rng, GOOD_QUOTE), seq=seq,
                                prev=rng.choice([None, QuoteTick("MES", 1, Decimal("6500"), Decimal("6500.25"))]))
            assert isinstance(q, QuoteTick) and q.bid < q.ask
            validator.check_quote(q)
        elif which == "trade":
            t = m.trade_print_to_tick("MES", tick_size, mutate_payload(rng, GOOD_TRADE), seq=seq)
            assert isinstance(t, TradeTick) and t.price > 0 and t.size >= 1
            validator.check_trade(t)
        elif which == "order":
            o = m.parse_order(mutate_payload(rng, GOOD_ORDER))
            coid = o.custom_tag or "ext"
            m.order_event(o, client_order_id=coid, strategy_id=m.strategy_id_of(coid))
            m.order_to_intent(o, client_order_id=coid, strategy_id=m.strategy_id_of(coid), instrument="MES")
        elif which == "fill":
            f = m.parse_trade(mutate_payload(rng, GOOD_FILL))
            m.fill_from_trade(f, client_order_id="grid-MES-1-3", strategy_id="grid-MES", instrument="MES",
                              leaves_qty=rng.choice([0, -3, 1]))
        elif which == "position":
            m.position_snapshot(m.parse_position(mutate_payload(rng, GOOD_POSITION)), instrument="MES")
        elif which == "bar":
            m.parse_bar(mutate_payload(rng, GOOD_BAR))
        elif which == "depth":
            m.parse_depth(mutate_payload(rng, GOOD_DEPTH))
        elif which == "account":
            m.parse_account(mutate_payload(rng, GOOD_ACCOUNT))
        else:
            m.parse_contract(mutate_payload(rng, GOOD_CONTRACT))
    except MalformedPayload as e:
        assert e.reason and len(str(e)) < 1000, str(e)[:200]
        return "malformed"
    return "ok"


# --------------------------------------------------------------------------- the test

def test_fuzzed_inputs_end_in_documented_errors_only(tmp_path, capsys):
    rng = random.Random(SEED)
    counts: collections.Counter = collections.Counter()
    failures: list[str] = []

    def case(kind: str, fn) -> None:
        counts[f"{kind}: run"] += 1
        try:
            counts[f"{kind}: {fn()}"] += 1
        except Exception:  # noqa: BLE001 - collected and reported below
            counts["tracebacks"] += 1
            failures.append(f"{kind}: {traceback.format_exc()[-3000:]}")

    # 1. configs through load_config (overrides) and YAML files
    for i in range(300):
        ov = mutated_overrides(rng)
        case("config overrides", lambda ov=ov: check_config_outcome(lambda: load_config(overrides=ov)))
    for i, text in enumerate(YAML_SNIPPETS):
        p = tmp_path / f"fuzz{i}.yaml"
        p.write_text(text, encoding="utf-8", errors="surrogateescape")
        case("config yaml", lambda p=p: check_config_outcome(lambda: load_config(p)))
    for i in range(40):
        ov = mutated_overrides(rng)
        p = tmp_path / f"fuzz_dump{i}.yaml"
        try:
            p.write_text(yaml.safe_dump(ov))
        except yaml.YAMLError:
            continue
        case("config yaml", lambda p=p: check_config_outcome(lambda: load_config(p)))

    # 2. a sample of configs through supervisor.main (backtest, one day): exit 0 or 2
    run_dir = tmp_path / "run"
    main_cases: list[list[str]] = []
    for i in range(14):
        p = tmp_path / f"main{i}.yaml"
        p.write_text(yaml.safe_dump(mutated_overrides(rng)) if i % 2 else rng.choice(YAML_SNIPPETS),
                     encoding="utf-8", errors="surrogateescape")
        main_cases.append(["--mode", "backtest", "--config", str(p), "--run-dir", str(run_dir)])
    main_cases += [["--mode", "backtest", "--run-dir", str(run_dir), *DAY],
                   ["--mode", "backtest", "--run-dir", str(run_dir), "--start", "2020-01-01"],
                   ["--mode", "backtest", "--run-dir", str(run_dir), "--start", "2031-01-01", "--end", "2031-01-02"],
                   ["--mode", "backtest", "--run-dir", str(run_dir), "--speed", "inf", *DAY],
                   ["--mode", "backtest", "--run-dir", str(tmp_path / "f.txt" / "x"), *DAY],
                   ["--mode", "backtest", "--run-dir", str(run_dir), "--data", str(tmp_path / "nowhere")]]
    (tmp_path / "f.txt").write_text("a file, not a directory")
    for argv in main_cases:
        case("supervisor config", lambda argv=argv: f"exit {check_main(argv)}")

    # 3. corrupted bar files through load_bar_csv, a sample backtested from a tmp data dir
    es, nq = demo_lines("ES_2min.csv.gz"), demo_lines("NQ_2min.csv.gz")
    for i in range(120):
        name, raw = corrupt_bar_file(rng, es if i % 2 else nq)
        p = tmp_path / f"bars{i}.csv.gz"
        p.write_bytes(raw)
        case("csv load", lambda p=p, inst=("MES" if i % 2 else "MNQ"): check_bar_load(p, inst))
        counts[f"csv mutation {name}"] += 1
    for i in range(8):
        data = tmp_path / f"data{i}"
        data.mkdir()
        target, keep = ("ES_2min.csv.gz", "NQ_2min.csv.gz") if i % 2 else ("NQ_2min.csv.gz", "ES_2min.csv.gz")
        name, raw = corrupt_bar_file(rng, demo_lines(target))
        (data / target).write_bytes(raw)
        shutil.copy(DEMO / keep, data / keep)
        argv = ["--mode", "backtest", "--run-dir", str(run_dir), "--data", str(data), *DAY]
        case("csv backtest", lambda argv=argv: f"exit {check_main(argv)}")

    # 4. malformed hub payloads through the mapping functions, ticks through the validator
    validator = MarketDataValidator()
    for i in range(400):
        case("hub payload", lambda i=i: check_hub_payload(rng, validator, i))
    lo, hi = plausible_range("MES")
    assert all(lo <= v[2] <= hi for v in validator._last_trade.values())

    report = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"\nfuzz counts: {report}")
    assert not failures, f"{len(failures)} uncaught exception(s) [{report}]:\n" + "\n".join(failures[:5])
    assert counts["tracebacks"] == 0
    assert counts["config overrides: ok"] > 0 and counts["config overrides: error"] > 0
    assert counts["supervisor config: exit 0"] > 0 and counts["supervisor config: exit 2"] > 0
