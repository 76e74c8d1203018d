"""web/auth.py is authentication and imports nothing from web/api.py (the route plumbing
imports auth, not the other way round); no import between them hides inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import appliance.web

WEB = Path(appliance.web.__file__).parent


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at top level) for each `from x import` / `import x` of the file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            out.extend((a.name, id(node) in top) for a in node.names)
    return out


def test_auth_imports_nothing_from_api() -> None:
    assert "appliance.web.api" not in {m for m, _ in _imports(WEB / "auth.py")}


def test_api_imports_auth_at_the_top_only() -> None:
    uses = [top for m, top in _imports(WEB / "api.py") if m == "appliance.web.auth"]
    assert uses and all(uses)


def test_the_session_routes_are_a_view_module() -> None:
    from appliance.web import auth
    from appliance.web.views import session

    assert not hasattr(auth, "bp") and session.bp.name == "auth"
