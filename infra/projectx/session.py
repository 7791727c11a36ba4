"""Starting a ProjectX session: login, account checks, front-month contracts, history warm-up.

Every failure is a :class:`LiveStartupError` with the process exit code (2: credentials, account or
contract; 4: gateway unreachable or failing). Credentials never appear in a message or a log line.
Endpoints and their pitfalls: docs/projectx.md.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from loguru import logger

from domain.calendar import trading_day
from domain.messages import TradeTick
from infra.projectx import errors as pxe
from infra.projectx.mapping import GatewayAccount
from infra.projectx.rest import ProjectXClient
from infra.replay import BarRow, bar_to_ticks

EXIT_CONFIG, EXIT_GATEWAY = 2, 4
"""Exit codes of a failed start (as documented in ``supervisor.py``)."""

BAR_S = 120
"""Warm-up bar length, seconds (2-minute bars: what the recorded data and the sandbox provide)."""


class LiveStartupError(Exception):
    """Live mode cannot start. ``code`` is the process exit code (2 config/credentials/account/contract,
    4 gateway unreachable). The message never contains credentials."""

    def __init__(self, message: str, code: int = EXIT_CONFIG) -> None:
        super().__init__(message)
        self.code = code


def connect(cfg: Any, username: str, api_key: str) -> tuple[ProjectXClient, GatewayAccount, dict[str, str]]:
    """Log in, pick the account and resolve the front-month contracts of ``cfg.instruments()``.

    Returns: (client, account, {instrument: contract id}).
    Raises LiveStartupError: authentication refused, unknown account, account that cannot trade,
        funded account without ``confirm_funded``, contract not resolvable (code 2); gateway
        unreachable or any other gateway error (code 4).
    """
    px = cfg.projectx
    client = ProjectXClient(px.base_url, username, api_key, read_attempts=2, backoff_max_s=2.0)
    try:
        try:
            client.token()
            accounts = client.accounts()
        except pxe.AuthenticationFailed as e:
            raise LiveStartupError(f"ProjectX login refused for user {username!r} at {px.base_url}: "
                                   f"{e.code or e}; check PROJECTX_USERNAME / PROJECTX_API_KEY") from None
        except (pxe.RequestNotSent, pxe.TransportFailure) as e:
            raise LiveStartupError(f"ProjectX gateway {px.base_url} unreachable: {e}", EXIT_GATEWAY) from None
        wanted = px.account
        match = [a for a in accounts if str(a.id) == wanted or a.name == wanted]
        if not match:
            known = ", ".join(f"{a.id} {a.name}" for a in accounts) or "none"
            raise LiveStartupError(f"projectx.account: no active account {wanted!r}; available: {known}")
        account = match[0]
        kind = "practice" if account.simulated else "FUNDED"
        if not account.can_trade:
            raise LiveStartupError(f"projectx.account: account {account.id} {account.name} cannot trade "
                                   "(canTrade false)")
        if not account.simulated and not px.confirm_funded:
            raise LiveStartupError(f"projectx.account: {account.id} {account.name} is a funded account "
                                   "(simulated: false); refusing to trade it without --confirm-funded")
        contracts: dict[str, str] = {}
        for inst in cfg.instruments():
            try:
                contracts[inst] = client.resolve_front_month(inst).id
            except pxe.ContractResolutionError as e:
                raise LiveStartupError(f"contract for {inst}: {e}") from None
        logger.info("ProjectX: account {} {} ({}), contracts {}", account.id, account.name, kind, contracts)
        return client, account, contracts
    except pxe.ProjectXError as e:  # anything else the gateway answered at startup
        client.close()
        raise LiveStartupError(f"ProjectX gateway {px.base_url}: {e}", EXIT_GATEWAY) from None
    except BaseException:
        client.close()
        raise


def connect_market(cfg: Any, username: str, api_key: str) -> tuple[ProjectXClient, dict[str, str]]:
    """Log in and resolve the front-month contracts of ``cfg.instruments()`` (market data only).

    Returns: (client, {instrument: contract id}).
    Raises LiveStartupError: login refused or contract not resolvable (code 2); gateway unreachable
        or erroring (code 4).
    """
    px = cfg.projectx
    client = ProjectXClient(px.base_url, username, api_key, read_attempts=2, backoff_max_s=2.0)
    try:
        client.token()
        contracts = {inst: client.resolve_front_month(inst).id
                     for inst in cfg.instruments()}
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


def history_warmup(client: ProjectXClient, contracts: dict[str, str]) -> tuple[dict[str, list[TradeTick]], int]:
    """Warm-up ticks from ``History/retrieveBars`` and the gateway's current time.

    Finds the last closed trading day from daily bars (the last 400 calendar days), then reads the
    2-minute bars from that day's open up to now and turns each into four ticks as a replay does
    (:func:`infra.replay.bar_to_ticks`). Returns (ticks by instrument, anchor) where anchor is the end of
    the latest 2-minute bar (epoch ns UTC): the gateway's "now" as far as history shows it (the
    sandbox's clock is its replay time, not the wall clock). Raises ProjectXError.
    """
    now = dt.datetime.now(dt.timezone.utc)
    ticks: dict[str, list[TradeTick]] = {}
    anchor = 0
    for inst, cid in contracts.items():
        days = client.retrieve_bars(cid, now - dt.timedelta(days=400), now, unit=4, unit_number=1)
        if not days:
            logger.warning("ProjectX: no daily history for {} ({}); no warm-up", inst, cid)
            continue
        last_day = trading_day(days[-1].ts_ns + 12 * 3600 * 10**9)
        start = dt.datetime.fromtimestamp(days[-1].ts_ns / 1e9, dt.timezone.utc) - dt.timedelta(days=1)
        bars = client.retrieve_bars(cid, start, min(now, start + dt.timedelta(days=5)), unit=2, unit_number=BAR_S // 60)
        rows = [BarRow(inst, b.ts_ns, BAR_S, b.open, b.high, b.low, b.close, b.volume) for b in bars
                if trading_day(b.ts_ns) >= last_day]
        ticks[inst] = [t for row in rows for t in bar_to_ticks(row)]
        if rows:
            anchor = max(anchor, rows[-1].end_ns)
        logger.info("ProjectX: warm-up {} with {} 2-minute bars from trading day {}", inst, len(rows), last_day)
    if not anchor:
        anchor = time.time_ns()
    return ticks, anchor
