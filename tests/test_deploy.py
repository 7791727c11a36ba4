"""The deployment files under infra/deploy/ (docs/operations.md, "Deployment"), checked without
docker: the Grafana dashboard's structure and that every metric it queries exists; the compose
file's services, loopback-only ports and the files it mounts; the Dockerfile (slim, non-root,
CPU-only torch); the systemd unit (Type=notify, WatchdogSec) and the sd_notify datagrams the node
sends it."""

from __future__ import annotations

import configparser
import json
import re
import socket
from pathlib import Path

import yaml

from infra.metrics import Metrics
from infra.sdnotify import notify

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "infra" / "deploy"
PROMQL_FUNCTIONS = {"histogram_quantile", "sum", "by", "rate", "increase", "le"}


def _metric_names() -> set[str]:
    """Every sample name the node's registry can export (labelled families included, which have
    no samples until set; prometheus_client keeps the names in ``_names_to_collectors``)."""
    return set(Metrics().registry._names_to_collectors)  # noqa: SLF001


def test_the_dashboard_is_valid_and_queries_only_metrics_the_node_exports():
    dash = json.loads((DEPLOY / "grafana/dashboards/trader.json").read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    panels = dash["panels"]
    titles = " ".join(p["title"].lower() for p in panels)
    for wanted in ("p&l", "drawdown", "mll headroom", "open orders", "exposure", "atr", "hedge ratio",
                   "correlation", "restarts", "latency"):
        assert wanted in titles, wanted
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    exported = _metric_names()
    for p in panels:
        assert set(p["gridPos"]) == {"x", "y", "w", "h"} and p["datasource"]["uid"] == "prometheus"
        for t in p["targets"]:
            for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?=[{\[(\s)]|$)", t["expr"]):
                if name in PROMQL_FUNCTIONS or name.isdigit():
                    continue
                assert name in exported or name.removesuffix("_bucket") in exported, (p["title"], name)


def test_compose_runs_the_node_with_redis_prometheus_and_grafana_on_loopback_only():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "trader", "prometheus", "grafana"}
    assert (DEPLOY / "compose.yaml").parent.joinpath(services["trader"]["build"]["context"],
                                                     services["trader"]["build"]["dockerfile"]).resolve() == \
        (DEPLOY / "Dockerfile").resolve()
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), (name, src)
    trader = services["trader"]
    assert trader["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert "${OPS_TOKEN:?" in trader["environment"]["OPS_TOKEN"]  # compose refuses to start without it
    metrics_port = trader["command"][trader["command"].index("--metrics-port") + 1]
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == [f"trader:{metrics_port}"]
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert datasource["datasources"][0]["uid"] == "prometheus"


def test_the_dockerfile_is_slim_non_root_with_cpu_torch():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "--index-url https://download.pytorch.org/whl/cpu" in text and "torch==2.13.0" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    for src in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", text, re.M):
        for part in src.split():
            assert (ROOT / part).exists(), part
    container = yaml.safe_load((DEPLOY / "container.yaml").read_text())
    assert container["runtime"]["ops_host"] == "0.0.0.0"


def test_the_systemd_unit_is_type_notify_with_a_watchdog():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(DEPLOY / "systemd/topstep-actors.service")
    svc = unit["Service"]
    assert svc["Type"] == "notify" and int(svc["WatchdogSec"]) > 0 and svc["User"] != "root"
    assert "supervisor.py" in svc["ExecStart"] and svc["KillSignal"] == "SIGTERM"


def test_sd_notify_sends_datagrams_to_the_notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(2)
        assert notify("READY=1", {"NOTIFY_SOCKET": path})
        assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": path})
        assert [server.recv(100), server.recv(100)] == [b"READY=1", b"WATCHDOG=1"]
    assert notify("READY=1", {}) is False  # not under systemd: nothing to do
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False  # never raises
