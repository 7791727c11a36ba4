#!/usr/bin/env python
"""Compile the replay's hottest modules with mypyc into ``build/native/`` (optional; about 30 s).

The modules (:data:`domain.native.MODULES`: the bar builders, indicators, session calendar,
portfolio and the backtest's dispatcher) do the same work compiled as they do
in Python: same fills, same P&L to the cent, checked by tests/test_native.py. The build makes a
backtest, a sweep or a walk-forward about 15-20 % faster (docs/benchmarks.md). It is used only
while every compiled module's source is unchanged (domain/native.py): edit one and the process
runs every module from its ``.py`` again, with a warning, until the next build.

Usage::

    pip install -e ".[native]"             # mypy, whose mypyc compiles; also needs gcc and Python's headers
    python scripts/build_native.py         # build (replaces an earlier build)
    python scripts/build_native.py --status   # is a build there, current, used? (exit 0 in use, 1 not)
    python scripts/build_native.py --clean    # remove it: everything runs from the sources

``NATIVE_BUILD=off`` runs from the sources without removing the build.

Exit codes: 0 built (or ``--status``: in use), 1 ``--status``: not in use, 2 a missing tool
(mypy, a C compiler, Python's headers) or a failed compile (the compiler's last lines printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from domain import native  # noqa: E402  (imports none of the modules it compiles)

GROUP = "trader_native"
"""mypyc's group name: the shared runtime of the build is the extension ``trader_native__mypyc``."""

_COMPILE = """
import sys
from mypyc.build import mypycify
from setuptools import setup
paths, target, lib, temp = sys.argv[1].split(","), sys.argv[2], sys.argv[3], sys.argv[4]
setup(name="trader-native", ext_modules=mypycify(paths, opt_level="3", group_name="%s", target_dir=target),
      script_args=["build_ext", "--build-lib", lib, "--build-temp", temp])
""" % GROUP


def missing_tools() -> list[str]:
    """What the build needs and this machine lacks, each with how to get it (empty: all there)."""
    missing = []
    try:
        import mypyc  # noqa: F401
    except ImportError:
        missing.append("mypy (its mypyc compiles): pip install -e '.[native]'")
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(cc):
        missing.append(f"a C compiler ({cc}): apt install gcc")
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not header.exists():
        missing.append(f"Python's C headers ({header}): apt install python3-dev")
    return missing


def build(out_dir: Path = native.BUILD_DIR) -> native.NativeStatus:
    """Compile :data:`domain.native.MODULES` and install them in ``out_dir`` with their manifest.

    The old manifest goes first and the new one is written last, so a half-copied build is never
    taken for a current one. Returns the new build's :func:`domain.native.status`.

    Raises:
        SystemExit(2): a tool is missing, the compile failed, or a source changed while compiling.
    """
    lacking = missing_tools()
    if lacking:
        raise SystemExit("cannot build the native modules, missing:\n  " + "\n  ".join(lacking))
    hashes = {m: native.source_hash(m) for m in native.MODULES}
    paths = [str(native.source_path(m).relative_to(ROOT)) for m in native.MODULES]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    with tempfile.TemporaryDirectory(prefix="build-native-") as tmp:
        t = Path(tmp)
        env = {**os.environ, "MYPY_CACHE_DIR": str(t / "mypy-cache"), "NATIVE_BUILD": "off"}
        print(f"compiling {len(paths)} modules with mypyc (about 30 s): {', '.join(native.MODULES)}", flush=True)
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-c", _COMPILE, ",".join(paths), str(t / "c"), str(t / "lib"),
                              str(t / "temp")], cwd=ROOT, env=env, capture_output=True, text=True)
        if run.returncode != 0:
            tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-25:])
            raise SystemExit(f"mypyc failed (exit {run.returncode}); its last lines:\n{tail}")
        if {m: native.source_hash(m) for m in native.MODULES} != hashes:
            raise SystemExit("a source changed while compiling; run the build again")
        (out_dir / "manifest.json").unlink(missing_ok=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        entries = {}
        for m in native.MODULES:
            rel = Path(*m.split(".")).with_suffix("")
            rel = rel.with_name(rel.name + suffix)
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(t / "lib" / rel, out_dir / rel)
            entries[m] = {"file": str(rel), "sha256": hashes[m]}
        lib = f"{GROUP}__mypyc{suffix}"
        shutil.copy2(t / "lib" / lib, out_dir / lib)
        import mypy.version
        manifest = {"ext_suffix": suffix, "python": sys.version.split()[0], "mypy": mypy.version.__version__,
                    "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "modules": entries,
                    "libraries": {f"{GROUP}__mypyc": lib}}
        tmp_manifest = out_dir / "manifest.json.tmp"
        tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
        tmp_manifest.replace(out_dir / "manifest.json")
        print(f"built in {time.perf_counter() - t0:.0f} s: {out_dir}")
    return native.status(out_dir / "manifest.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--status", action="store_true", help="print whether a current build is there and used")
    what.add_argument("--clean", action="store_true", help="remove build/native")
    args = ap.parse_args(argv)
    if args.clean:
        shutil.rmtree(native.BUILD_DIR, ignore_errors=True)
        print(f"removed {native.BUILD_DIR.relative_to(ROOT)}")
        return 0
    if args.status:
        found = native.status()
        print(f"native build: {found.state}: {found.detail}")
        return 0 if found.in_use else 1
    try:
        found = build()
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    print(f"native build: {found.state}: {found.detail}")
    return 0 if found.in_use else 2


if __name__ == "__main__":
    raise SystemExit(main())
