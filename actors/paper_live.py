"""Paper mode on live market data: the ProjectX market hub in, simulated fills out.

``python supervisor.py --mode paper`` with ``PROJECTX_USERNAME`` and ``PROJECTX_API_KEY`` set runs
the paper tree (:class:`actors.runner.PaperSystem`: paper venue, paper risk, no arming needed since
no order ever leaves the process) with the feed of live mode (:class:`actors.live.LiveFeed`):
quotes and trades of the front-month MES and MNQ from the market hub, warm-up bars from
``History/retrieveBars``, and the wall-clock ``ClockTick`` so time rules fire when data is quiet.
Only market-data endpoints are used (login, contract search, history, market hub); no account is
needed and nothing is sent to the gateway's order or position endpoints.

It runs until SIGINT/SIGTERM (then cancels, flattens through risk, persists and prints the summary
like replayed paper mode). Namespace default ``tsx:paper-live`` so a replay session's state is never
mixed with it. Timestamps epoch ns UTC; sessions America/Chicago.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from loguru import logger

from actors.execution import PaperVenue, StoreIds
from actors.live import EXIT_CONFIG, EXIT_GATEWAY, LiveFeed, LiveStartupError, WallClock, history_warmup, serve
from actors.runner import PaperSystem
from actors.system import WriteBehind
from domain.calendar import trading_day
from domain.handler import FEED
from infra.projectx import errors as pxe
from infra.projectx.hubs import MarketHub
from infra.projectx.rest import ProjectXClient


def connect_market(cfg: Any, username: str, api_key: str) -> tuple[ProjectXClient, dict[str, str]]:
    """Log in and resolve the front-month contracts of the grid and hedge instruments.

    Returns: (client, {instrument: contract id}).
    Raises LiveStartupError: login refused or contract not resolvable (code 2); gateway unreachable
        or erroring (code 4).
    """
    px = cfg.projectx
    client = ProjectXClient(px.base_url, username, api_key, read_attempts=2, backoff_max_s=2.0)
    try:
        client.token()
        contracts = {inst: client.resolve_front_month(inst).id
                     for inst in dict.fromkeys((cfg.grid.instrument, cfg.hedge.instrument))}
    except pxe.AuthenticationFailed as e:
        client.close()
        raise LiveStartupError(f"ProjectX login refused for user {username!r} at {px.base_url}: {e.code or e}; "
                               "check PROJECTX_USERNAME / PROJECTX_API_KEY", EXIT_CONFIG) from None
    except pxe.ContractResolutionError as e:
        client.close()
        raise LiveStartupError(f"contract: {e}", EXIT_CONFIG) from None
    except pxe.ProjectXError as e:
        client.close()
        raise LiveStartupError(f"ProjectX gateway {px.base_url}: {e}", EXIT_GATEWAY) from None
    logger.info("ProjectX market data: contracts {}", contracts)
    return client, contracts


class LiveDataPaperSystem(PaperSystem):
    """Paper tree with the live-mode feed (see the module docstring).

    Args:
        cfg, store, alerter, metrics: as :class:`PaperSystem`.
        client: a logged-in :class:`ProjectXClient` (market data only).
        contracts: our instrument -> gateway contract id.
    Raises ProjectXError: the history warm-up failed.
    """

    mode = "paper"
    feed_on_loop = True  # the live feed never blocks: it shares the decision path's loop

    def __init__(self, cfg: Any, store: Any, alerter: Any, metrics: Any | None, client: ProjectXClient,
                 contracts: dict[str, str]) -> None:
        from infra.trade_log import TradeLog
        self.cfg, self.store, self.alerter, self.metrics = cfg, store, alerter, metrics
        self.client, self.contracts = client, contracts
        self.incarnation = store.new_incarnation()
        self.ids = StoreIds(store, self.incarnation)
        self.writer = WriteBehind()
        self.venue = PaperVenue(store, cfg.runtime.slippage_ticks, cfg.runtime.fill_on_touch, self.writer)
        self.resumed = self.venue.last_key is not None
        self.warmup, anchor = history_warmup(client, contracts, cfg)
        self.start_ns = max(anchor, self.venue.last_ts)
        self.venue.last_ts = self.start_ns
        self.days = [trading_day(self.start_ns).isoformat()]
        name = f"paper_{cfg.runtime.namespace.replace(':', '_')}_{self.days[0]}.csv"
        self.trade_log = TradeLog(Path(cfg.runtime.run_dir) / "trades" / name)
        self.market = MarketHub(cfg.projectx.hubs_url, client.token, on_quote=self._on_tick, on_trade=self._on_tick,
                                on_state=lambda s: logger.warning("ProjectX market hub {}", s))
        self._wire()

    def _make_feed(self) -> LiveFeed:
        anchor = self.feed_handler.last_ts if self.feed_handler is not None else self.start_ns
        warm = self.warmup if self.feed_handler is None and not self.resumed else []
        self.feed_handler = LiveFeed(warm, anchor)
        return self.feed_handler

    def _on_tick(self, tick: Any) -> None:
        self.directory.tell(FEED, tick)

    def now_ns(self) -> int:
        """The event clock (last feed event + wall time since), epoch ns UTC."""
        feed = self.feed_handler
        return feed.now_ns() if feed is not None else self.start_ns

    def _clock_loop(self) -> None:
        while not self.done.wait(1.0):
            self.directory.tell(FEED, WallClock())

    def start(self) -> None:
        """Start the tree (HALTED until reconciled with the paper venue), then market data and the timer."""
        super().start()
        for inst, cid in self.contracts.items():
            self.market.subscribe(cid, inst)
        self.market.start()
        threading.Thread(target=self._clock_loop, name="paper-live-timer", daemon=True).start()

    def summary(self, reason: str, seconds: float) -> Any:
        self.days = sorted({self.days[0], trading_day(self.now_ns()).isoformat()})
        return super().summary(reason, seconds)

    def stop(self) -> None:
        self.done.set()
        self.market.stop()
        super().stop()
        self.client.close()


def run_paper_live(cfg: Any, username: str, api_key: str) -> int:
    """Paper session on live market data until SIGINT/SIGTERM or escalation. Returns the exit code."""
    from infra.alerts import SlackAlerter
    from infra.embedded_redis import EmbeddedRedis
    from infra.state_store import StateStore

    t0 = time.perf_counter()
    client, contracts = connect_market(cfg, username, api_key)
    url = cfg.runtime.redis_url or os.environ.get("REDIS_URL")
    if not url:
        url = EmbeddedRedis(Path(cfg.runtime.run_dir) / "redis").ensure_running()
    store = StateStore.from_url(url, cfg.runtime.namespace)
    try:
        system = LiveDataPaperSystem(cfg, store, SlackAlerter(os.environ.get("SLACK_WEBHOOK_URL")), None, client,
                                     contracts)
    except pxe.ProjectXError as e:
        client.close()
        raise LiveStartupError(f"history warm-up failed: {e}", EXIT_GATEWAY) from None
    logger.info("paper session on live ProjectX market data ({}), namespace {}", cfg.projectx.base_url,
                cfg.runtime.namespace)
    return serve(system, t0, "paper (live data)")
