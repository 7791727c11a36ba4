"""The import layers of docs/architecture.md hold: ``actors -> infra | config -> domain``, and the
domain imports no host, adapter, config or I/O library (the contracts are in pyproject.toml,
``[tool.importlinter]``; import-linter reads every import, function-level ones too)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(tree: Path = ROOT) -> subprocess.CompletedProcess:
    """``lint-imports`` on the source tree ``tree`` (its pyproject.toml, its packages first on the path)."""
    bindir = str(Path(sys.executable).parent)
    exe = shutil.which("lint-imports", path=bindir) or shutil.which("lint-imports")
    assert exe, "lint-imports is missing: pip install -e '.[test]' (import-linter)"
    return subprocess.run([exe, "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tree), "PATH": bindir})


def test_the_import_contracts_are_kept():
    run = _lint_imports()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in run.stdout


def test_a_domain_module_importing_the_log_library_breaks_the_contract(tmp_path):
    """The check is live: a copy of the tree with one domain module importing loguru fails."""
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns(".venv", ".git", "run", "__pycache__", "*.egg-info", "data", "docs", "tests")
    shutil.copytree(ROOT, tree, ignore=ignore)
    (tree / "domain" / "instruments.py").write_text("from loguru import logger  # noqa: F401\n"
                                                   + (tree / "domain" / "instruments.py").read_text())
    run = _lint_imports(tree)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert "domain is not allowed to import loguru" in run.stdout
    assert "domain.instruments -> loguru" in run.stdout
