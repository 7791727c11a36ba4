"""The compiled build of the replay's hottest modules: used only when it was made from these sources.

``scripts/build_native.py`` compiles :data:`MODULES` with mypyc (the compiler of mypy; C
extension modules that do what the Python source does) into ``build/native/`` and records, in
``build/native/manifest.json``, the SHA-256 of each module's source file and the interpreter's
extension suffix (``sysconfig`` ``EXT_SUFFIX``, e.g. ``.cpython-311-x86_64-linux-gnu.so``).

:func:`install` puts a finder at the front of ``sys.meta_path`` that loads those extension
modules in place of their ``.py`` files, all of them or none:

- all, when the manifest exists, names this interpreter's extension suffix, and every compiled
  module's source still has the recorded hash;
- none otherwise. Compiled modules call one another directly in C, so one changed source makes
  the whole build stale; every module then loads from its ``.py`` and one ``RuntimeWarning``
  names the changed file and the command that rebuilds. An edited source therefore always runs
  as written, built or not.

``NATIVE_BUILD=off`` in the environment loads every module from its ``.py`` (to compare the two,
or to debug with a Python debugger inside them). Nothing is compiled unless the build script ran:
a fresh clone runs pure Python. Why this exists and why these modules: docs/decisions/0024.

This module sits in the domain, the lowest layer, because the ``__init__`` of each package that
holds a compiled module (``domain``, ``actors``) imports it before any of its modules loads; it
reads the manifest and hashes the sources it names once per process, when it is first imported.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import sysconfig
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = ROOT / "build" / "native"
MANIFEST = BUILD_DIR / "manifest.json"
ENV = "NATIVE_BUILD"
"""Environment switch: ``off`` loads every module from its ``.py``."""

MODULES = ("domain.bars", "domain.indicators", "domain.calendar", "domain.portfolio", "actors.dispatcher")
"""The modules the build compiles: each delivery and each print passes through them, and each
compiles with no change to what it does (docs/decisions/0024 has the measurements, and why risk,
its rules and the strategies are not among them)."""


def source_path(module: str) -> Path:
    """``domain.bars`` -> ``<repo>/domain/bars.py``."""
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def source_hash(module: str) -> str:
    """SHA-256 (hex) of ``module``'s source file.

    Raises:
        FileNotFoundError: no such source.
    """
    return hashlib.sha256(source_path(module).read_bytes()).hexdigest()


@dataclass(frozen=True)
class NativeStatus:
    """What :func:`status` found.

    Attributes:
        state: ``"in use"`` (the build matches: its modules load compiled), ``"off"``
            (``NATIVE_BUILD=off``), ``"not built"``, ``"stale"`` (a source changed since the build),
            ``"other interpreter"`` (built for another Python or platform) or ``"unreadable"``
            (the manifest cannot be read).
        detail: one line for a log or a terminal, naming what is stale or missing.
        modules: module name -> extension file (absolute path), filled when ``state == "in use"``.
        libraries: extension modules the compiled ones import by name (mypyc's shared runtime of
            the build), name -> file.
    """

    state: str
    detail: str
    modules: dict[str, Path] = field(default_factory=dict)
    libraries: dict[str, Path] = field(default_factory=dict)

    @property
    def in_use(self) -> bool:
        return self.state == "in use"

    @property
    def line(self) -> str:
        """``native build <state>: <detail>``, as a run's log and the benchmarks print it."""
        return f"native build {self.state}: {self.detail}"


def status(manifest: Path | None = None) -> NativeStatus:
    """Whether the build at ``manifest`` (default :data:`MANIFEST`) can be used by this
    interpreter for these sources. Reads the manifest and hashes the sources it names (about 1 ms);
    raises nothing."""
    if os.environ.get(ENV, "").strip().lower() == "off":
        return NativeStatus("off", f"{ENV}=off: every module runs from its Python source")
    path = manifest or MANIFEST
    if not path.exists():
        return NativeStatus("not built", "not built (python scripts/build_native.py compiles the hot modules)")
    try:
        data = json.loads(path.read_text())
        suffix = data["ext_suffix"]
        entries = data["modules"]
        libraries = data.get("libraries", {})
    except (OSError, ValueError, KeyError, TypeError) as e:
        return NativeStatus("unreadable", f"{path} unreadable ({e}); rebuild: python scripts/build_native.py")
    here = sysconfig.get_config_var("EXT_SUFFIX")
    if suffix != here:
        return NativeStatus("other interpreter", f"built for {suffix}, this interpreter loads {here}; "
                                                 "rebuild: python scripts/build_native.py")
    changed = []
    for name, entry in entries.items():
        try:
            if source_hash(name) != entry["sha256"]:
                changed.append(str(source_path(name).relative_to(ROOT)))
        except FileNotFoundError:
            changed.append(f"{source_path(name).relative_to(ROOT)} (gone)")
    if changed:
        return NativeStatus("stale", f"{', '.join(changed)} changed since the native build; running every module "
                                     "from its Python source (rebuild: python scripts/build_native.py)")
    base = path.parent
    modules = {name: base / entry["file"] for name, entry in entries.items()}
    libs = {name: base / file for name, file in libraries.items()}
    missing = [str(p) for p in (*modules.values(), *libs.values()) if not p.exists()]
    if missing:
        return NativeStatus("unreadable", f"missing {', '.join(missing)}; rebuild: python scripts/build_native.py")
    return NativeStatus("in use", f"{len(modules)} modules compiled ({', '.join(modules)})", modules, libs)


class NativeFinder:
    """``sys.meta_path`` finder: the build's extension module for each name it holds, else nothing
    (the next finder loads the ``.py``). Built from a :class:`NativeStatus` that is in use."""

    def __init__(self, found: NativeStatus) -> None:
        self.files = {**found.libraries, **found.modules}

    def find_spec(self, name: str, path=None, target=None):  # noqa: ANN001 - the importlib protocol
        file = self.files.get(name)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(name, str(file))
        return importlib.util.spec_from_file_location(name, file, loader=loader)


_installed: NativeStatus | None = None


def install() -> NativeStatus:
    """Install the finder once per process (later calls return the first answer). Must run before
    any of :data:`MODULES` is imported; the ``__init__`` of ``domain`` and ``actors`` calls it. A stale build warns
    once (``RuntimeWarning``); ``not built`` and ``off`` are silent."""
    global _installed
    if _installed is not None:
        return _installed
    found = _installed = status()
    if found.in_use:
        sys.meta_path.insert(0, NativeFinder(found))
    elif found.state in ("stale", "other interpreter", "unreadable"):
        warnings.warn(f"native build not used: {found.detail}", RuntimeWarning, stacklevel=2)
    return found


def loaded() -> dict[str, bool]:
    """Each of :data:`MODULES` imported so far -> True when it came from the build."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return {name: str(getattr(sys.modules[name], "__file__", "")).endswith(suffix)
            for name in MODULES if name in sys.modules}
