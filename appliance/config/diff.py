"""What changes between two configurations: a summary a person reads first, then the lines."""

from __future__ import annotations

import difflib
from typing import Any

import yaml

from appliance.config.load import to_yaml
from appliance.config.model import Config
from appliance.config.redact import redact_pair


def _by_name(items: list[dict[str, Any]], key: str = "name") -> dict[str, dict[str, Any]]:
    return {str(i.get(key)): i for i in items}


def _changed_fields(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def summary(old: Config, new: Config) -> list[str]:
    """One line per added, removed or changed conduit, interface, NAT entry or section;
    empty only when the two configurations are the same."""
    a, b = old.canonical(), new.canonical()
    out: list[str] = []
    for section, label in (("conduits", "conduit"), ("interfaces", "interface")):
        olds, news = _by_name(a[section]), _by_name(b[section])
        for name in news.keys() - olds.keys():
            out.append(f"+ {label} {name}")
        for name in olds.keys() - news.keys():
            out.append(f"- {label} {name}")
        for name in sorted(olds.keys() & news.keys()):
            fields = _changed_fields(olds[name], news[name])
            if fields:
                out.append(f"~ {label} {name}: {', '.join(fields)}")
    for key in ("one_to_one", "port_forwards", "masquerade"):
        if a["nat"][key] != b["nat"][key]:
            out.append(f"~ nat.{key}")
    if a["unit"] != b["unit"]:
        out.append(f"~ unit: {', '.join(_changed_fields(a['unit'], b['unit']))}")
    shown = {"conduits", "interfaces", "nat", "unit"}
    for key in sorted((a.keys() | b.keys()) - shown):  # devices, fleet, webhooks, web, ...
        if a.get(key) != b.get(key):
            out.append(f"~ {key}")
    return sorted(out, key=lambda line: (line[2:], line[0]))


def unified(
    old: Config, new: Config, old_label: str, new_label: str, *, redacted: bool = False
) -> list[str]:
    """The YAML of both documents, line by line. `redacted` (for whoever may not read
    secrets): both documents are redacted by key first, then rendered and compared, so no
    secret is in the text whatever its length or however YAML wraps it; a secret that
    changed reads "[redacted, changed]"."""
    if redacted:
        a, b = redact_pair(old, new)
        old_text, new_text = _yaml(a), _yaml(b)
    else:
        old_text, new_text = to_yaml(old), to_yaml(new)
    return list(
        difflib.unified_diff(
            old_text.splitlines(),
            new_text.splitlines(),
            fromfile=old_label,
            tofile=new_label,
            lineterm="",
        )
    )


def _yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
