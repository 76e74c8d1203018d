"""The import layers of issue 10: no lazy imports between the config check and the models
it checks, and the import contracts of pyproject.toml that `make lint` runs."""

from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "appliance"

# The modules that used to import each other inside functions to dodge a circle.
LAYERED = ("config/check.py", "config/model.py", "config/base.py", "config/field.py")


def _local_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every `import appliance...` below the module's top level."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if id(node) in top:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("appliance."):
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("appliance.")]
    return out


def test_config_and_field_models_import_each_other_only_at_the_top():
    found = {rel: _local_imports(PKG / rel) for rel in LAYERED}
    assert found == {rel: [] for rel in LAYERED}


def test_check_field_is_typed():
    from appliance.config.base import Finding
    from appliance.config.field import check_field

    hints = inspect.get_annotations(check_field, eval_str=True)
    assert "Any" not in str(hints)
    assert hints["errors"] == list[Finding]
    assert hints["warnings"] == list[Finding]


def test_finding_is_one_class():
    from appliance.config import base, check, load

    assert check.Finding is base.Finding is load.Finding


# -- the contracts of pyproject.toml, run by lint-imports as `make lint` does -----------------

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_of_the_package(tmp_path: Path) -> Path:
    """The package and pyproject.toml (its contracts) in a scratch directory."""
    shutil.copytree(PKG, tmp_path / "appliance", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=where,
        env={**os.environ, "PYTHONPATH": str(where)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_its_import_contracts(tmp_path):
    r = _lint(_copy_of_the_package(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:]
    assert "BROKEN" not in r.stdout
    assert re.search(r"Contracts: (\d+) kept, 0 broken", r.stdout)


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")


def test_a_broken_contract_fails_the_lint(tmp_path):
    """A pure module importing a library, a store importing a role, a new circle and a
    role importing a library it does not own: each breaks its contract, lint fails."""
    where = _copy_of_the_package(tmp_path)
    pkg = where / "appliance"
    _append(pkg / "field" / "plan.py", "import socket")
    _append(pkg / "state" / "db.py", "import appliance.web.role")
    _append(pkg / "config" / "base.py", "import appliance.config.model")
    _append(pkg / "web" / "api.py", "import pyroute2")
    r = _lint(where)
    assert r.returncode != 0
    text = " ".join(r.stdout.split())  # long contract names wrap onto the next line

    def status(name: str) -> str:
        found = re.search(re.escape(name) + r".*? (KEPT|BROKEN)", text)
        assert found, name
        return found.group(1)

    assert status("the pure core") == "BROKEN"
    assert status("state/ (the stores) imports no role") == "BROKEN"
    assert status("no circles") == "BROKEN"
    assert status("only the link and conntrack adapters import pyroute2") == "BROKEN"
    assert status("only the nftables adapter imports nftables") == "KEPT"
    assert "appliance.field.plan -> socket" in text
    assert "appliance.state.db -> appliance.web.role" in text
    assert "No cycles are allowed in appliance.config." in text
    assert "appliance.web.api -> pyroute2" in text
