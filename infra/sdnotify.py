"""systemd's service notification protocol (``man 3 sd_notify``;
https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html): one datagram of
``KEY=value`` lines to the unix socket named by ``$NOTIFY_SOCKET`` (``@`` = Linux abstract
namespace). The unit in ``infra/deploy/systemd/`` is ``Type=notify`` with ``WatchdogSec``: the
node sends ``READY=1`` once its actor tree is up, the watchdog actor ``WATCHDOG=1`` on each
healthy check, and ``STOPPING=1`` at shutdown. Without ``$NOTIFY_SOCKET`` (not under systemd)
every call is a no-op.
"""

from __future__ import annotations

import os
import socket


def notify(state: str, env: dict[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``, ``"WATCHDOG=1"``) to systemd; True if sent. Never raises:
    a notification that cannot be delivered must not stop the node (systemd's watchdog then
    restarts it, which is the point)."""
    address = (env if env is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
        return True
    except OSError:
        return False
