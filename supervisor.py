#!/usr/bin/env python
"""Entry point: ``python supervisor.py --mode paper`` (default), ``--mode backtest`` or ``--mode live``.

paper:    the actor system under the supervision tree, replaying the bundled real ES/NQ data as
          MES/MNQ at ``--speed`` x real time (default 1440: one trading day a minute), simulated
          fills, state mirrored in Redis (``REDIS_URL``, else an embedded redis-server under
          ``run/redis``). Killed and restarted against the same Redis, it resumes: HALTED until
          reconciled with the paper venue, then trading continues. With ``PROJECTX_USERNAME`` and
          ``PROJECTX_API_KEY`` set (and no replay option) it trades live ProjectX market data
          instead, fills still simulated, until SIGINT/SIGTERM (namespace ``tsx:paper-live``).
backtest: the same handlers on one thread with the simulated clock, as fast as possible; two runs
          on the same input write byte-identical trade logs. The summary ends with seed 002's
          results table; then the report folder ``{run_dir}/reports/<run>/`` (report.html,
          summary.json, trades.csv, plots; docs/report.md) is written and its path printed
          (``--report-day`` picks the price charts' day, ``--no-report`` skips it).

Every mode is one row of ``actors.tree.MODES`` run by ``actors.node.run``; the strategies are the
``strategies:`` list of the config (default: the MES grid and its MNQ hedge).
live:     the same tree over the ProjectX Gateway (TopstepX, or the local sandbox with
          ``--base-url``): credentials only from ``PROJECTX_USERNAME`` / ``PROJECTX_API_KEY``,
          ``--account`` required, starts UNARMED (no order reaches the gateway) unless ``--arm``;
          arm/disarm at run time with ``redis-cli SET {ns}:ops:armed 1|0``. A funded account
          (``simulated: false``) needs ``--confirm-funded``. Runs until SIGINT/SIGTERM.

Exit codes: 0 normal end or SIGINT/SIGTERM (after cancel + flatten + persist), 2 bad config or
arguments (the message names the field), replay data unreadable or without a trading day in
``--start``..``--end`` (names the file and line, or the days the data covers), run or log directory
not writable, Redis not reachable, missing or refused credentials, unknown/refused account or unresolvable contract
(live), 3 supervision escalation (emergency flatten done), 4 gateway unreachable or failing at
start (live), 1 unexpected error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from loguru import logger  # noqa: E402

from config.settings import AppConfig, ConfigError, list_profiles, load_config  # noqa: E402

EXIT_OK, EXIT_CONFIG = 0, 2
CREDENTIAL_ENV = ("PROJECTX_USERNAME", "PROJECTX_API_KEY")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Supervised actor trader for TopstepX (paper/backtest/live).")
    p.add_argument("--mode", choices=("paper", "backtest", "live"), default="paper")
    p.add_argument("--profile", default="combine-50k", help=f"risk profile: {', '.join(list_profiles())}")
    p.add_argument("--config", type=Path, help="YAML config file (see config/default.yaml)")
    p.add_argument("--data", type=Path, help="folder with ES_2min.csv.gz and NQ_2min.csv.gz (default data/demo), "
                                             "or a tick recording folder (runtime.record_ticks_dir)")
    p.add_argument("--start", type=dt.date.fromisoformat, help="first trading day (YYYY-MM-DD, America/Chicago)")
    p.add_argument("--end", type=dt.date.fromisoformat, help="last trading day")
    p.add_argument("--speed", help="replay speed: a factor (1 = real time, 1440 = a day a minute) or 'max'")
    p.add_argument("--namespace", help="Redis key namespace (default tsx:paper; live: tsx:live)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (0 = any free port)")
    p.add_argument("--ops-port", type=int, help="ops API port (default 9109; 0 = any free port); docs/operations.md")
    p.add_argument("--run-dir", type=Path, help="where logs, trades and the embedded Redis live (default run/)")
    p.add_argument("--fresh", action="store_true", help="paper: forget mirrored state and start over")
    p.add_argument("--replay", action="store_true",
                   help="paper: replay recorded data even when ProjectX credentials are set")
    p.add_argument("--trades-csv", type=Path, help="backtest: trade log path")
    p.add_argument("--report-day", type=dt.date.fromisoformat,
                   help="backtest: trading day (YYYY-MM-DD) of the report's price charts (default the worst day)")
    p.add_argument("--no-report", action="store_true",
                   help="backtest: no report folder ({run_dir}/reports/<run>/, docs/report.md)")
    p.add_argument("--base-url", help="live: ProjectX REST host (default https://api.topstepx.com)")
    p.add_argument("--rtc-url", help="live: ProjectX hubs host (default https://rtc.topstepx.com, or --base-url "
                                     "when that is not the default)")
    p.add_argument("--account", help="live: account name or id")
    p.add_argument("--arm", action="store_true", help="live: start armed (orders may reach the gateway)")
    p.add_argument("--confirm-funded", action="store_true", help="live: allow a funded (simulated: false) account")
    p.add_argument("--debug", action="store_true", help="variable values in logged tracebacks (still redacted)")
    return p.parse_args(argv)


def paper_on_live_data(args: argparse.Namespace) -> bool:
    """Paper mode takes live ProjectX market data when both credentials are in the environment and
    no replay option (``--replay``, ``--data``, ``--start``, ``--end``, ``--speed``) was given."""
    replay_asked = args.replay or any(v is not None for v in (args.data, args.start, args.end, args.speed))
    return args.mode == "paper" and not replay_asked and all(os.environ.get(n) for n in CREDENTIAL_ENV)


def build_config(args: argparse.Namespace) -> AppConfig:
    runtime: dict = {}
    for key, val in (("data_dir", args.data), ("start", args.start), ("end", args.end), ("speed", args.speed),
                     ("namespace", args.namespace), ("metrics_port", args.metrics_port), ("ops_port", args.ops_port),
                     ("run_dir", args.run_dir)):
        if val is not None:
            runtime[key] = val
    if args.run_dir is not None:
        runtime["log_dir"] = args.run_dir / "logs"
    mode = "paper-live" if paper_on_live_data(args) else args.mode
    if args.namespace is None and mode in ("live", "paper-live"):  # never mixed with a replay's state
        from actors.tree import MODES
        runtime["namespace"] = MODES[mode].namespace
    px: dict = {key: val for key, val in (("base_url", args.base_url), ("rtc_url", args.rtc_url),
                                          ("account", args.account)) if val is not None}
    if args.arm:
        px["armed"] = True
    if args.confirm_funded:
        px["confirm_funded"] = True
    overrides = {k: v for k, v in (("runtime", runtime), ("projectx", px)) if v}
    return load_config(args.config, args.profile, overrides or None)


def _os_detail(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _unwritable_dirs(cfg: AppConfig, args: argparse.Namespace) -> str | None:
    """Create the directories the run writes to (``runtime.run_dir``, ``runtime.log_dir``, the
    ``--trades-csv`` folder) and write a probe file in each. Returns the first problem as
    ``"<field>: cannot write to <dir>: <reason>"``, or None."""
    import tempfile
    dirs = [("runtime.run_dir", Path(cfg.runtime.run_dir)), ("runtime.log_dir", Path(cfg.runtime.log_dir))]
    if args.trades_csv is not None:
        dirs.append(("--trades-csv", Path(args.trades_csv).parent))
    for field, d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=d):
                pass
        except (OSError, ValueError) as exc:
            return f"{field}: cannot write to {d}: {_os_detail(exc)}"
    return None


def backtest_report(cfg: AppConfig, args: argparse.Namespace):
    """The hook that writes a backtest's report folder (``{run_dir}/reports/<run>/``,
    :func:`infra.reporting.write_report`) and prints its path; None with ``--no-report``."""
    if args.no_report:
        return None

    def report(summary) -> None:
        import time

        from infra.reporting import check_report_day, new_report_dir, write_report
        t0 = time.perf_counter()
        day = args.report_day.isoformat() if args.report_day else None
        check_report_day(summary, day)  # before a folder is made
        out = write_report(summary, cfg, new_report_dir(cfg.runtime.run_dir, summary, cfg.profile.name), day=day)
        print(f"report: {out}/report.html (summary.json, trades.csv, plots; written in "
              f"{time.perf_counter() - t0:.2f}s)")
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv``; returns the exit code (module docstring). Bad arguments,
    configuration, data files (unreadable, no trading day in ``--start``..``--end``), a run or log
    directory that cannot be written and an unreachable Redis all return 2 with a message naming
    the field, file or line on stderr; only an unexpected error escapes (exit 1)."""
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return EXIT_CONFIG if exc.code else EXIT_OK
    try:
        cfg = build_config(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.mode == "live":
        missing = [name for name in CREDENTIAL_ENV if not os.environ.get(name)]
        if missing:
            print(f"config error: live mode needs ProjectX credentials in the environment: {', '.join(missing)} "
                  "not set", file=sys.stderr)
            return EXIT_CONFIG
        if cfg.projectx.account is None:
            print("config error: projectx.account: live mode needs an account (--account NAME_OR_ID)", file=sys.stderr)
            return EXIT_CONFIG
    if args.report_day is not None and args.mode == "backtest" and not (
            (cfg.runtime.start is None or cfg.runtime.start <= args.report_day)
            and (cfg.runtime.end is None or args.report_day <= cfg.runtime.end)):
        print(f"config error: --report-day {args.report_day} is outside --start..--end "
              f"({cfg.runtime.start or 'data start'}..{cfg.runtime.end or 'data end'})", file=sys.stderr)
        return EXIT_CONFIG
    problem = _unwritable_dirs(cfg, args)
    if problem:
        print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    from infra.logs import setup_logging
    try:
        setup_logging(cfg.runtime.log_dir, debug=args.debug)
    except (OSError, ValueError) as exc:
        print(f"config error: runtime.log_dir: cannot log to {cfg.runtime.log_dir}: {_os_detail(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    from domain.native import install
    native = install()  # the compiled hot modules, when built and current (docs/decisions/0024)
    logger.info("{}", native.line)
    from actors.node import run
    from infra.projectx.session import LiveStartupError
    mode = "paper-live" if paper_on_live_data(args) else args.mode
    credentials = tuple(os.environ[n] for n in CREDENTIAL_ENV) if mode in ("live", "paper-live") else None
    try:
        return run(cfg, mode, fresh=args.fresh, credentials=credentials, trades_csv=args.trades_csv,
                   after_backtest=backtest_report(cfg, args) if mode == "backtest" else None)
    except LiveStartupError as exc:
        logger.error("{} mode cannot start: {}", mode, exc)
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:  # e.g. Redis not reachable (actors.node.open_store)
        logger.error("cannot run: {}", exc)
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (FileNotFoundError, ValueError) as exc:  # replay data missing, unreadable, no trading day
        logger.error("cannot run: {}", exc)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        if exc.filename is None:
            raise
        logger.error("cannot run: {}: {}", exc.filename, _os_detail(exc))
        print(f"error: {exc.filename}: {_os_detail(exc)}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
