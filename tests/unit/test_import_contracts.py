"""The import layers of issue 10: no lazy imports between the config check and the models
it checks, and the import contracts of pyproject.toml that `make lint` runs."""

from __future__ import annotations

import ast
import inspect
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
