"""Reading a configuration document: YAML or JSON text in, a validated Config out.

Every error carries the path of the bad field (`conduits[2].services[0]`) and,
for YAML files, the line it is on, so a person can go straight to it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml
from pydantic import ValidationError

from appliance.config import plain
from appliance.config.check import Finding, check
from appliance.config.model import Config
from appliance.errors import ConfigInvalid


@dataclass(frozen=True)
class Loaded:
    config: Config
    warnings: list[str] = field(default_factory=list)


def format_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(err: dict[str, Any]) -> str:
    """One pydantic error as a plain sentence (appliance/config/plain.py, shared with the
    API's request bodies): "give at least one service", not pydantic's wording."""
    return plain.sentence(err, Config)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at `loc` (or of its nearest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            entry = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if entry is None:
                return line
            # The key's line: a block value (`unit:` then `  name: x`) starts a line later.
            key, node = entry
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


# A plant's configuration is kilobytes (3000 conduits: about 0.5 MB, 63,000 YAML nodes).
# Parsing costs by the node: at 4 MiB a document of tiny keys took ~5 s to refuse, so the
# bounds are 1 MiB and MAX_NODES, and a refusal or a parse stays near a second.
MAX_DOCUMENT_CHARS = 1024 * 1024
MAX_NODES = 200_000  # scalars, maps and lists: "[1,1,1,...]" of 1 MiB is 520,000
MAX_DEPTH = 32  # the model nests 6 levels; anything deeper is not a configuration
REQUIRED = ("version", "interfaces")  # every real document has these: an empty one is a mistake


_CORE = "tag:yaml.org,2002:"
# The explicit tags a document may carry: JSON's types. Others are refused (`!!binary` gave
# bytes that a text field took as text, `!!omap` a list of tuples, `!!python/...` objects).
_ALLOWED_TAGS = {
    None,
    "!",
    *(_CORE + t for t in ("str", "int", "float", "bool", "null", "map", "seq")),
}


def _refuse_expansion(text: str, source: str | None) -> None:
    """Refuse what makes YAML cost more than its length or mean more than it shows:
    anchors and aliases (a few hundred bytes of nested aliases expand to gigabytes,
    "billion laughs"), merge keys (`<<` copies keys in, beside any written out, with no
    duplicate-key error), tags beyond JSON's types, and deep nesting. One pass over the
    parser's events: linear in the text."""

    def refuse(message: str, ev: yaml.Event) -> None:
        line = ev.start_mark.line + 1 if ev.start_mark else None
        raise ConfigInvalid([("", message, line)], source)

    depth = 0
    nodes = 0
    loader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
    for ev in yaml.parse(text, Loader=loader):
        kind = type(ev)
        if (
            kind is yaml.ScalarEvent
            or kind is yaml.MappingStartEvent
            or kind is yaml.SequenceStartEvent
        ):
            nodes += 1
            if nodes > MAX_NODES:
                refuse(f"the document has more than {MAX_NODES} values, maps and lists", ev)
        if kind is yaml.ScalarEvent:
            if ev.tag is not None and ev.tag not in _ALLOWED_TAGS:
                refuse(_tag_refused(ev.tag), ev)
            if ev.value == "<<" and ev.implicit[0]:
                # plain, not quoted: YAML takes it for the merge key (as a value too,
                # where it fails later with a worse message)
                refuse("YAML merge keys (<<) are not allowed: write the keys out", ev)
            if ev.anchor:
                refuse(f"YAML anchors (&{ev.anchor}) are not allowed: write the value out", ev)
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            depth += 1
            if depth > MAX_DEPTH:
                refuse(f"the document nests deeper than {MAX_DEPTH} levels", ev)
            if ev.tag is not None and ev.tag not in _ALLOWED_TAGS:
                refuse(_tag_refused(ev.tag), ev)
            if ev.anchor:
                refuse(f"YAML anchors (&{ev.anchor}) are not allowed: write the value out", ev)
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            depth -= 1
        elif kind is yaml.AliasEvent:
            refuse(f"YAML aliases (*{ev.anchor}) are not allowed: write the value out", ev)


def _tag_refused(tag: str) -> str:
    shown = "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag
    return f"the YAML tag {shown} is not allowed: write plain text, numbers, lists and maps"


def parse_text(text: str, source: str | None = None) -> tuple[Any, yaml.Node | None]:
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ConfigInvalid(
            [("", f"the document is larger than {MAX_DOCUMENT_CHARS // (1024 * 1024)} MiB", None)],
            source,
        )
    loader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
    try:
        _refuse_expansion(text, source)
        node = yaml.compose(text, Loader=loader)
    except yaml.reader.ReaderError as e:
        # a character YAML refuses (NUL, other C0 controls): its line, not a stream position
        line = text.count("\n", 0, e.position) + 1
        ch = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or "\0")
        raise ConfigInvalid(
            [("", f"not valid YAML: the character U+{ch:04X} is not allowed", line)], source
        ) from None
    except yaml.YAMLError as e:
        raise ConfigInvalid(
            [("", f"not valid YAML: {_problem(e, text)}", _mark_line(e))], source
        ) from None
    try:
        data = loader("").construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        raise ConfigInvalid(
            [("", f"not valid YAML: {_problem(e)}", _mark_line(e))], source
        ) from None
    except ValueError:
        # int() of more than sys.get_int_max_str_digits() digits (4300) refuses to convert
        line = _long_number_line(node)
        raise ConfigInvalid(
            [("", f"number too long (more than {_MAX_DIGITS} digits)", line)], source
        ) from None
    dupes = _duplicate_keys(node)
    if dupes:
        raise ConfigInvalid(
            [
                (path, f"key {key!r} appears twice (line {first} and {line})", line)
                for path, key, first, line in dupes
            ],
            source,
        )
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigInvalid([("", "the document must be a mapping of sections", 1)], source)
    return data, node


_MAX_DIGITS = sys.get_int_max_str_digits() or 4300


def _problem(e: yaml.YAMLError, document: str = "") -> str:
    """PyYAML's problem text on one line (its str() spans lines and names a stream); a tab
    where YAML wants a space is said so ('found character that cannot start any token')."""
    mark = getattr(e, "problem_mark", None)
    if mark is not None and document[mark.index : mark.index + 1] == "\t":
        return f"a tab at column {mark.column + 1}: YAML indents and separates with spaces"
    text = getattr(e, "problem", None) or str(e).split("\n", 1)[0]
    return " ".join(str(text).split())


def _mark_line(e: yaml.YAMLError) -> int | None:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return mark.line + 1 if mark else None


def _long_number_line(node: yaml.Node | None) -> int | None:
    """The line of the first integer scalar too long for int() (its key's line in a map)."""
    stack: list[tuple[yaml.Node, int]] = [(node, node.start_mark.line + 1)] if node else []
    while stack:
        current, line = stack.pop()
        if isinstance(current, yaml.MappingNode):
            for key, value in reversed(current.value):
                stack.append((value, key.start_mark.line + 1))
                stack.append((key, key.start_mark.line + 1))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((v, v.start_mark.line + 1) for v in reversed(current.value))
        elif (
            isinstance(current, yaml.ScalarNode)
            and current.tag == "tag:yaml.org,2002:int"
            and sum(c.isdigit() for c in current.value) > _MAX_DIGITS
        ):
            return line
    return None


def _duplicate_keys(
    node: yaml.Node | None, loc: tuple[Any, ...] = ()
) -> list[tuple[str, str, int, int]]:
    """Keys that appear twice in one mapping: YAML keeps the last silently, we refuse."""
    out: list[tuple[str, str, int, int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, value in node.value:
            k = getattr(key, "value", None)
            line = key.start_mark.line + 1
            if k in seen:
                out.append((format_path((*loc, k)), str(k), seen[k], line))
            else:
                seen[k] = line
            out.extend(_duplicate_keys(value, (*loc, k)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.extend(_duplicate_keys(item, (*loc, i)))
    return out


_MISSING = {
    "version": "is required: a configuration document starts with `version: 1` "
    "(an empty or truncated document is refused, so that it cannot remove everything)",
    "interfaces": "is required and may not be empty: a configuration names the unit's "
    "interfaces (an empty or truncated document is refused, so that it cannot remove everything)",
}


def validate_data(
    data: Any,
    *,
    source: str | None = None,
    node: yaml.Node | None = None,
    now: datetime | None = None,
) -> Loaded:
    def line(path_loc: tuple[Any, ...]) -> int | None:
        return _line_of(node, path_loc) if node is not None else None

    if isinstance(data, dict):
        # the first one only: an empty upload is one mistake, not two
        missing = next((k for k in REQUIRED if data.get(k) in (None, "", [], {})), None)
        if missing:
            raise ConfigInvalid([(missing, _MISSING[missing], line(()))], source)
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        found = e.errors()
        errors = [
            (format_path(tuple(err["loc"])), _message(err), line(tuple(err["loc"])))
            for err in found[:MAX_ERRORS]
        ]
        raise ConfigInvalid(_capped(errors, len(found)), source) from None
    errs, warns = check(config, now)
    if errs:
        shown = [(f.path, f.message, line(_loc(f.path))) for f in errs[:MAX_ERRORS]]
        raise ConfigInvalid(_capped(shown, len(errs)), source)
    return Loaded(config, [_fmt(f) for f in warns])


MAX_ERRORS = 50  # errors listed for one document: 5,000 bad conduits printed 35,000 lines


def _capped(
    errors: list[tuple[str, str, int | None]], total: int
) -> list[tuple[str, str, int | None]]:
    """The first MAX_ERRORS errors, and a last line that counts the rest."""
    if total <= MAX_ERRORS:
        return errors
    return [*errors, ("", f"{total - MAX_ERRORS:,} more errors not shown: fix these first", None)]


def _fmt(f: Finding) -> str:
    return f"{f.path}: {f.message}"


def _loc(path: str) -> tuple[Any, ...]:
    out: list[Any] = []
    for part in path.replace("]", "").replace("[", ".").split("."):
        if part:
            out.append(int(part) if part.isdigit() else part)
    return tuple(out)


def load_text(text: str, source: str | None = None, now: datetime | None = None) -> Loaded:
    data, node = parse_text(text, source)
    return validate_data(data, source=source, node=node, now=now)


def canonical_json(config: Config) -> str:
    return json.dumps(config.canonical(), sort_keys=True, separators=(",", ":"))


def sha256_of(config: Config) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.canonical(), sort_keys=False, default_flow_style=False)
