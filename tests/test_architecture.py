"""The layout's contract holds: layers import downwards only, and the core never imports
Lightning (the contracts are in pyproject.toml, [tool.importlinter]; docs/dev/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "lightning_to_energy"
LINT_IMPORTS = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def test_import_contracts_are_kept() -> None:
    pytest.importorskip("importlinter", reason="import-linter is a dev dependency")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    # The console script's own module, run by this interpreter: no PATH lookup.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # 3 contracts (layers, core without Lightning, CLI without a direct Lightning import)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 3 kept, 0 broken." in done.stdout


def _imported_names(tree: ast.AST) -> list[tuple[int, str, str]]:
    return [
        (node.lineno, node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    ]


def test_no_module_imports_another_modules_private_name() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, module, name in _imported_names(tree):
            private = name.startswith("_") and not name.startswith("__")
            if module.startswith("lightning_to_energy") and private:
                found.append(f"{path.relative_to(PACKAGE)}:{line}: {module}.{name}")
    # nothing found: the shared helpers are public names (cli._common, _files hold public ones)
    assert found == []


def _is_submodule(package: str, name: str) -> bool:
    """``from package import name`` imports a module, not a name the package defines."""
    folder = PACKAGE / Path(*package.split(".")[1:])
    return (folder / f"{name}.py").exists() or (folder / name / "__init__.py").exists()


def test_every_module_others_import_from_declares_all() -> None:
    imported: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported |= {
            m
            for _, m, name in _imported_names(tree)
            if m.startswith("lightning_to_energy") and not _is_submodule(m, name)
        }
    missing = []
    for module in sorted(imported):
        parts = module.split(".")[1:]
        path = PACKAGE / Path(*parts).with_suffix(".py") if parts else PACKAGE / "__init__.py"
        if not path.exists():
            path = PACKAGE / Path(*parts) / "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        if "__all__" not in names and module != "lightning_to_energy.counting.formulas":
            missing.append(module)
    # every module imported by another one says what it offers
    assert missing == []
