"""scripts/download_history.py against the sandbox gateway: exact bar files, resume without
duplicates, and clear exits for bad credentials / unknown contracts."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import pytest

from infra.replay import load_bar_csv
from infra.sandbox.server import SandboxConfig, SandboxGateway

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("download_history", ROOT / "scripts" / "download_history.py")
dh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dh)

DAY1 = ["--start", "2026-04-07", "--end", "2026-04-07"]


@pytest.fixture
def gw(monkeypatch):
    server = SandboxGateway(SandboxConfig(speed=0, port=0))  # clock at the 2nd day: day 1 is history
    server.start()
    monkeypatch.setenv("PROJECTX_USERNAME", "sandbox")
    monkeypatch.setenv("PROJECTX_API_KEY", "sandbox-key")
    monkeypatch.delenv("PROJECTX_BASE_URL", raising=False)
    yield server
    server.stop()


def demo_rows(symbol: str, first: str, last: str) -> list[str]:
    with gzip.open(ROOT / "data" / "demo" / f"{symbol}_2min.csv.gz", "rt") as fh:
        return [line for line in fh.read().splitlines()[1:] if first <= line[:19] <= last]


def lines(path: Path) -> list[str]:
    with gzip.open(path, "rt") as fh:
        return fh.read().splitlines()


def test_downloads_the_replay_format_and_resumes_without_duplicates(gw, tmp_path):
    args = ["--symbol", "ES", *DAY1, "--unit", "minute", "--unit-number", "2", "--out", str(tmp_path),
            "--base-url", gw.base_url]
    assert dh.main(args) == 0
    path = tmp_path / "ES_2min.csv.gz"
    expected = demo_rows("ES", "2026-04-06 18:00:00", "2026-04-07 16:58:00")
    assert len(expected) == 686
    assert lines(path) == ["datetime,open,high,low,close,volume,symbol", *expected]
    rows, rejects = load_bar_csv(path)
    assert len(rows) == 686 and not rejects and rows[0].instrument == "MES" and rows[0].period_s == 120

    keep = lines(path)[:300]  # an interrupted run: only the first 299 bars made it
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(keep) + "\n")
    assert dh.main(args) == 0
    assert lines(path) == ["datetime,open,high,low,close,volume,symbol", *expected]
    assert dh.main(args) == 0  # already complete: unchanged
    assert lines(path) == ["datetime,open,high,low,close,volume,symbol", *expected]


def test_base_url_from_the_environment_and_other_units(gw, tmp_path, monkeypatch):
    monkeypatch.setenv("PROJECTX_BASE_URL", gw.base_url)
    assert dh.main(["--symbol", "NQ", *DAY1, "--unit", "minute", "--unit-number", "10", "--out", str(tmp_path)]) == 0
    rows, rejects = load_bar_csv(tmp_path / "NQ_10min.csv.gz")
    assert not rejects and rows[0].period_s == 600 and rows[0].instrument == "MNQ"


def test_bad_credentials_and_unknown_contracts_exit_clearly(gw, tmp_path, monkeypatch, capsys):
    common = [*DAY1, "--out", str(tmp_path), "--base-url", gw.base_url]
    assert dh.main(["--symbol", "CL", *common]) == 4
    assert "no active contract for CL" in capsys.readouterr().err
    assert dh.main(["--symbol", "ES", "--contract-id", "CON.F.US.XX.Z26", *common]) == 4
    monkeypatch.setenv("PROJECTX_API_KEY", "wrong-key")
    assert dh.main(["--symbol", "ES", *common]) == 3
    err = capsys.readouterr().err
    assert "authentication failed" in err and "wrong-key" not in err
    monkeypatch.delenv("PROJECTX_API_KEY")
    assert dh.main(["--symbol", "ES", *common]) == 2
    assert "PROJECTX_API_KEY" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.csv.gz"))
