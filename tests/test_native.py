"""The native build (domain/native.py, scripts/build_native.py, docs/decisions/0024):

- compiled and from source, a backtest makes the same trades, byte for byte, on both intra-bar
  paths' nets;
- a build is used only when every compiled module's source is the one it was built from: one
  changed source and every module runs from its ``.py``, with a warning naming the file;
- ``NATIVE_BUILD=off`` runs from source with the build in place.

Tests that need a build skip without one; ``REQUIRE_NATIVE=1`` (CI, ``.ci/run``) makes them fail
instead, and checks that this test process runs the compiled modules.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from domain import native

ROOT = Path(__file__).resolve().parents[1]

def _need_build():
    if not native.MANIFEST.exists() or native.status().state not in ("in use", "off"):
        if os.environ.get("REQUIRE_NATIVE") == "1":
            pytest.fail(f"REQUIRE_NATIVE=1 but the native build is {native.status().detail}")
        pytest.skip(f"native build: {native.status().detail}")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NATIVE_BUILD", "PROJECTX_USERNAME", "PROJECTX_API_KEY",
                                                           "SLACK_WEBHOOK_URL")}
    return {**env, **extra}


def test_this_test_run_uses_the_build_when_ci_requires_it():
    """Under REQUIRE_NATIVE=1 the whole suite runs the compiled modules (what the benchmarks time)."""
    if os.environ.get("REQUIRE_NATIVE") != "1":
        pytest.skip("REQUIRE_NATIVE is not set")
    assert native.install().in_use, native.install().detail
    import actors.dispatcher  # noqa: F401
    import domain.bars  # noqa: F401
    import domain.portfolio  # noqa: F401
    loaded = native.loaded()
    assert set(loaded) >= {"actors.dispatcher", "domain.bars", "domain.portfolio"}
    assert all(loaded.values()), loaded


def test_compiled_and_source_backtests_make_the_same_trades(tmp_path):
    """The bundled days through ``supervisor.py --mode backtest`` twice, compiled and from source:
    the same trade log byte for byte and the same summary (both intra-bar paths' nets)."""
    _need_build()
    logs, outs = {}, {}
    for label, extra in (("compiled", {}), ("source", {"NATIVE_BUILD": "off"})):
        proc = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--mode", "backtest", "--profile",
                               "combine-150k", "--no-report", "--run-dir", str(tmp_path / label),
                               "--trades-csv", str(tmp_path / f"{label}.csv")],
                              env=_env(**extra), cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        logs[label] = (tmp_path / f"{label}.csv").read_bytes()
        outs[label] = [ln for ln in proc.stdout.splitlines() if "PnL" in ln or "Trades" in ln or "path" in ln]
        want = f"native build in use: {len(native.MODULES)} modules compiled" if label == "compiled" else "native build off: NATIVE_BUILD=off"
        assert want in proc.stderr, proc.stderr[-2000:]
    assert logs["compiled"].count(b"\n") > 100  # three days of grid and hedge trading
    assert logs["compiled"] == logs["source"]
    assert outs["compiled"] == outs["source"] and any("Total PnL" in ln for ln in outs["source"])


def _tree_with_build(tmp_path: Path) -> Path:
    """A copy of the sources with the build (no data, docs or tests)."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".venv", ".git", "run", "__pycache__", "*.egg-info",
                                                               "data", "docs", "tests", "scripts", "config"))
    return tree


_PROBE = ("import warnings, json; warnings.simplefilter('always')\n"
          "import actors.dispatcher, domain.bars, domain.native as n\n"
          "print(json.dumps({'state': n.install().state, 'loaded': n.loaded()}))")


def _probe(tree: Path, **extra) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=tree, env=_env(PYTHONPATH=str(tree), **extra),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_one_changed_source_and_every_module_runs_from_python(tmp_path):
    """A copy of the tree loads the build; after one compiled module's source is edited, none of
    the compiled modules loads (they call one another in C), and the warning names the file."""
    _need_build()
    tree = _tree_with_build(tmp_path)
    found, err = _probe(tree)
    assert found == {"state": "in use", "loaded": {"domain.bars": True, "actors.dispatcher": True}}, err
    calendar = tree / "domain" / "calendar.py"
    calendar.write_text(calendar.read_text() + "\n# edited after the build\n")
    found, err = _probe(tree)
    assert found == {"state": "stale", "loaded": {"domain.bars": False, "actors.dispatcher": False}}
    assert "native build not used: domain/calendar.py changed since the native build" in err
    assert "python scripts/build_native.py" in err


def test_native_build_off_runs_from_python_with_the_build_in_place(tmp_path):
    _need_build()
    found, err = _probe(_tree_with_build(tmp_path), NATIVE_BUILD="off")
    assert found == {"state": "off", "loaded": {"domain.bars": False, "actors.dispatcher": False}}
    assert "native build not used" not in err  # a choice, not a problem


def _manifest(tmp_path: Path, change) -> Path:
    """A copy of a manifest (the real one when built, else a minimal current one) with ``change``
    applied; extension files are referenced where they are."""
    if native.MANIFEST.exists():
        data = json.loads(native.MANIFEST.read_text())
        for entry in data["modules"].values():
            entry["file"] = str(native.BUILD_DIR / entry["file"])
        data["libraries"] = {k: str(native.BUILD_DIR / v) for k, v in data.get("libraries", {}).items()}
    else:
        import sysconfig
        data = {"ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"), "libraries": {},
                "modules": {m: {"file": str(tmp_path / m), "sha256": native.source_hash(m)} for m in native.MODULES}}
        for m in native.MODULES:
            (tmp_path / m).write_bytes(b"")
    change(data)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    return path


def test_status_reads_the_manifest_and_the_sources(tmp_path, monkeypatch):
    """Each reason a build is not used, from the manifest alone (no import involved)."""
    monkeypatch.delenv("NATIVE_BUILD", raising=False)
    assert native.status(_manifest(tmp_path, lambda d: None)).in_use
    st = native.status(_manifest(tmp_path, lambda d: d["modules"]["domain.portfolio"].update(sha256="0" * 64)))
    assert st.state == "stale" and "domain/portfolio.py changed since the native build" in st.detail
    st = native.status(_manifest(tmp_path, lambda d: d.update(ext_suffix=".cpython-39-x86_64-linux-gnu.so")))
    assert st.state == "other interpreter" and "built for .cpython-39" in st.detail
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert native.status(bad).state == "unreadable"
    assert native.status(tmp_path / "absent.json").state == "not built"
    monkeypatch.setenv("NATIVE_BUILD", "off")
    assert native.status(_manifest(tmp_path, lambda d: None)).state == "off"


def test_the_build_script_reports_the_status_and_what_is_missing(monkeypatch):
    """``--status`` exits 0 only for a build in use; a missing tool is named with how to get it."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_native.py"), "--status"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith(f"native build: {native.status().state}: ")
    assert proc.returncode == (0 if native.status().in_use else 1)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_native
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    monkeypatch.setattr(build_native.shutil, "which", lambda name: None)
    assert any("a C compiler" in m and "apt install gcc" in m for m in build_native.missing_tools())
    assert build_native.main([]) == 2  # refused before any compile: no build replaced
    assert native.status().state == proc.stdout.split(": ")[1]
