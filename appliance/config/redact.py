"""Secrets out of configuration documents, by key, before anything is rendered.

Whatever a non-admin reads of a configuration (the JSON document, the YAML
export, the diff) and whatever goes into the diagnostics bundle is made from a
*redacted document*: the data with every secret value replaced, then rendered.
Nothing is redacted by searching rendered text for known values: that misses a
value shorter than is safe to replace and one YAML folds over two lines.

Which fields hold a secret comes from the models, so a new secret field cannot
be forgotten here:

- a field whose description starts with ``secret`` holds one as a whole value
  (``Field(None, description="secret: sent as Bearer")``): it becomes
  ``[redacted]``;
- a field with ``json_schema_extra={"x-secret": "url"}`` is a URL that may carry
  credentials (a webhook's, the fleet's): its user info, its sensitive query
  values, any token-looking path segment or query value and its fragment are
  redacted; the scheme, host, port and the rest stay for support to read.

As a belt under the models, a key whose *name* says secret (`is_secret_key`:
password, token, ..._key ...) is redacted too (a document from an older
version, a free mapping), every PEM private key is removed from any string,
and in every string a URL's user info and its sensitive query values
(``key=``, ``token=``, ``sig=`` ...) are redacted (`redact_text`).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any, Literal
from urllib.parse import SplitResult, unquote_plus, urlsplit, urlunsplit

from pydantic import BaseModel
from pydantic.fields import FieldInfo

REDACTED = "[redacted]"
CHANGED = "[redacted, changed]"  # a secret that differs from the other side of a diff

SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "token",
        "tokens",
        "secret",
        "secrets",
        "hash",
        "salt",
        "credential",
        "credentials",
        "cookie",
        "otp",
        "totp",
    }
)
SECRET_NAMES = frozenset({"setup_code", "private_key", "privkey", "client_key", "api_key"})
# query parameters whose value is a credential, beyond what `is_secret_key` says: a name
# that holds one of these (apitoken, accesskey, secretkey, X-Amz-Signature, auth_hmac ...)
SECRET_QUERY_PARTS = (
    "key",
    "token",
    "secret",
    "pass",
    "pwd",
    "sig",
    "auth",
    "cred",
    "hmac",
    "bearer",
    "session",
    "code",
    "access",
    "jwt",
    "otp",
)
SECRET_QUERY_NAMES = frozenset({"pw", "sid", "s", "k"})
PEM_PRIVATE = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.DOTALL
)
# scheme://userinfo@ in free text: up to the last @ before the first /, ?, # or space (a
# password may hold an unescaped @)
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#'\"<>]+@")
# a URL with a query in free text
_URL_WITH_QUERY = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"<>?]*\?[^\s'\"<>]*")
# name=value in a query (after ? & ;) or in free text (after a space, a comma, a bracket...)
_QUERY_PARAM = re.compile(r"([?&;])([^=&#]+)=([^&#]*)")  # in a URL's query: up to & or #
_PARAM = re.compile(r"(^|[?&;\s,(\[{'\"])([A-Za-z0-9_.\-\[\]]+)=(\[redacted\]|[^&#\s'\"<>,;)\]}]*)")
# a path segment that looks like a capability token (letters and digits, 16 or more)
_TOKENISH = re.compile(r"^(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_\-.~%+=]{16,}$")

SecretKind = Literal["value", "url"]
Path = tuple[str | int, ...]


def is_secret_key(name: str) -> bool:
    """Whether a key of this name holds a secret (password, client_key, token_hash ...)."""
    n = name.lower().replace("-", "_")
    if n in SECRET_NAMES or n.endswith("_key"):
        return True
    return any(part in SECRET_WORDS for part in n.split("_"))


def is_secret_query(name: str) -> bool:
    """Whether a URL query parameter of this name carries a credential: broader than
    `is_secret_key` (a query's names are terse and varied); the name is read as a
    receiver reads it (percent-decoded, without `[]` or a stray `;`)."""
    n = unquote_plus(name).lower().replace("-", "_").strip(" ;[]")
    return (
        is_secret_key(n) or n in SECRET_QUERY_NAMES or any(part in n for part in SECRET_QUERY_PARTS)
    )


def secret_kind(info: FieldInfo) -> SecretKind | None:
    """How a model field is marked: a secret value, a URL with credentials, or neither."""
    extra = info.json_schema_extra
    if isinstance(extra, dict) and extra.get("x-secret") in ("value", "url"):
        return typing.cast(SecretKind, extra["x-secret"])
    if (info.description or "").lower().startswith("secret"):
        return "value"
    return None


# -- URLs and free text --------------------------------------------------------------------


def _redact_params(
    text: str,
    found: set[str] | None,
    *,
    strict: bool = False,
    pattern: re.Pattern[str] = _PARAM,
    secret_name: Callable[[str], bool] = is_secret_key,
) -> str:
    """`name=value` pairs (a query's, or free text's) with a sensitive name, or (`strict`) a
    token-like value: the value redacted."""

    def sub(m: re.Match[str]) -> str:
        name, value = m.group(2), m.group(3)
        tokenish = strict and _TOKENISH.match(value) is not None
        if value and value != REDACTED and (tokenish or secret_name(name)):
            if found is not None:
                found.add(value)
            return f"{m.group(1)}{name}={REDACTED}"
        return m.group(0)

    return pattern.sub(sub, text)


def redact_url(url: str, *, strict: bool = False, found: set[str] | None = None) -> str:
    """`url` with its user info and sensitive query values redacted; the host stays.

    `strict` (a field marked as a URL with credentials, e.g. a webhook's): every path segment
    and query value that looks like a token (16+ letters and digits, at least one of each)
    and the fragment too: webhook URLs are often capabilities."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return redact_text(url, found)
    if not parts.scheme or not parts.netloc:
        return redact_text(url, found)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if found is not None:
            found.update(p for p in userinfo.split(":") if p)
        netloc = f"{REDACTED}@{hostport}"
    path = parts.path
    if strict:
        segments = path.split("/")
        for i, seg in enumerate(segments):
            if _TOKENISH.match(seg):
                if found is not None:
                    found.add(seg)
                segments[i] = REDACTED
        path = "/".join(segments)
    query = parts.query
    if query:
        query = "&" + query
        query = _redact_params(
            query, found, strict=strict, pattern=_QUERY_PARAM, secret_name=is_secret_query
        )[1:]
    fragment = REDACTED if strict and parts.fragment else parts.fragment
    return urlunsplit(SplitResult(parts.scheme, netloc, path, query, fragment))


def redact_text(text: str, found: set[str] | None = None) -> str:
    """Free text without PEM private keys, URL user info or the values of sensitive
    ``name=value`` pairs: in a URL's query by `is_secret_query` (``?key=``, ``sig=``), in the
    rest by `is_secret_key` (``token=``, ``password=``; not ``key=`` or ``code=``, which
    alarm keys and systemd's ``code=exited`` use).

    These are recognised by their shape, so replacing them cannot garble the rest."""
    if found is not None:
        found.update(m.group(0) for m in PEM_PRIVATE.finditer(text))
    text = PEM_PRIVATE.sub(REDACTED, text)

    def userinfo(m: re.Match[str]) -> str:
        info = m.group(0)[len(m.group(1)) : -1]
        if info == REDACTED:
            return m.group(0)
        if found is not None:
            found.update(p for p in info.split(":") if p)
        return f"{m.group(1)}{REDACTED}@"

    text = _URL_USERINFO.sub(userinfo, text)
    if "=" not in text:
        return text

    def query(m: re.Match[str]) -> str:
        head, _, rest = m.group(0).partition("?")
        q, hash_, fragment = rest.partition("#")
        q = _redact_params("&" + q, found, pattern=_QUERY_PARAM, secret_name=is_secret_query)[1:]
        return f"{head}?{q}{hash_}{fragment}"

    text = _URL_WITH_QUERY.sub(query, text)
    return _redact_params(text, found)


# -- documents, guided by the models -------------------------------------------------------


def _unwrap(ann: Any) -> Iterator[Any]:
    """The alternatives of an annotation (through Optional, unions, Annotated; a tuple of
    annotations is their union)."""
    if isinstance(ann, tuple):
        for a in ann:
            yield from _unwrap(a)
        return
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        yield from _unwrap(typing.get_args(ann)[0])
    elif origin in (typing.Union, types.UnionType):
        for a in typing.get_args(ann):
            yield from _unwrap(a)
    else:
        yield ann


def _models(ann: Any) -> tuple[type[BaseModel], ...]:
    return tuple(a for a in _unwrap(ann) if isinstance(a, type) and issubclass(a, BaseModel))


def _items(ann: Any) -> Any:
    """What a list/tuple/set annotation holds (None if it is none of those)."""
    for a in _unwrap(ann):
        origin = typing.get_origin(a)
        if origin in (list, tuple, set, frozenset):
            args = [x for x in typing.get_args(a) if x is not Ellipsis]
            return tuple(args) if args else Any
    return None


def _values(ann: Any) -> Any:
    """What a dict annotation maps to (None if it is not a dict)."""
    for a in _unwrap(ann):
        if typing.get_origin(a) is dict:
            args = typing.get_args(a)
            return args[1] if len(args) == 2 else Any
    return None


@cache
def _fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """The model's fields by the keys a document uses (alias and name)."""
    out: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        out[name] = info
        if info.alias:
            out[info.alias] = info
    return out


def _empty(v: Any) -> bool:
    return v is None or v == "" or v == [] or v == {}


def _collect(value: Any, found: set[str] | None) -> None:
    if found is None:
        return
    if isinstance(value, dict):
        for v in value.values():
            _collect(v, found)
    elif isinstance(value, list | tuple):
        for v in value:
            _collect(v, found)
    elif value is not None and not isinstance(value, bool):
        found.add(str(value))


def _walk(
    value: Any, ann: Any, path: Path, found: set[str] | None, secrets: dict[Path, Any]
) -> Any:
    if isinstance(value, dict):
        models = _models(ann)
        value_ann = None if models else _values(ann)
        out: dict[Any, Any] = {}
        for k, v in value.items():
            key = str(k)
            infos = [f for m in models if (f := _fields(m).get(key)) is not None]
            kinds = {secret_kind(f) for f in infos}
            here = (*path, key)
            if ("value" in kinds or is_secret_key(key)) and not _empty(v):
                _collect(v, found)
                secrets[here] = v
                out[k] = REDACTED
            elif "url" in kinds and isinstance(v, str):
                red = redact_url(v, strict=True, found=found)
                if red != v:
                    secrets[here] = v
                out[k] = red
            else:
                child = tuple(f.annotation for f in infos) if infos else value_ann
                out[k] = _walk(v, child, here, found, secrets)
        return out
    if isinstance(value, list | tuple):
        item = _items(ann)
        return [_walk(v, item, (*path, i), found, secrets) for i, v in enumerate(value)]
    if isinstance(value, str):
        return redact_text(value, found)
    return value


def redact_data(
    data: Any,
    model: type[BaseModel],
    found: set[str] | None = None,
    secrets: dict[Path, Any] | None = None,
) -> Any:
    """A copy of `data` (JSON data of `model`, e.g. the whole `Config`) with every secret
    redacted. The values taken out go into `found` (for scrubbing free text as a second
    belt), and by path into `secrets`."""
    return _walk(data, model, (), found, {} if secrets is None else secrets)


def redact_any(data: Any, found: set[str] | None = None) -> Any:
    """A copy of any JSON data (a live document, events) with secrets redacted by the name
    of their key and by their shape (`redact_text`): no model says what it holds."""
    return _walk(data, None, (), found, {})


def redact_config(cfg: BaseModel, found: set[str] | None = None) -> dict[str, Any]:
    """The configuration's canonical JSON data, secrets redacted."""
    canonical = getattr(cfg, "canonical", None)
    data = canonical() if callable(canonical) else cfg.model_dump(mode="json", by_alias=True)
    return redact_data(data, type(cfg), found)


def _set(data: Any, path: Path, value: Any) -> None:
    for step in path[:-1]:
        data = data[step]
    data[path[-1]] = value


def redact_pair(
    old: BaseModel, new: BaseModel, found: set[str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both configurations redacted for a diff: a secret that differs between them reads
    `CHANGED` on the new side, so the diff shows that it changed but not what it is."""
    old_secrets: dict[Path, Any] = {}
    new_secrets: dict[Path, Any] = {}
    a = redact_data(old.canonical(), type(old), found, old_secrets)  # type: ignore[attr-defined]
    b = redact_data(new.canonical(), type(new), found, new_secrets)  # type: ignore[attr-defined]
    for path, value in new_secrets.items():
        if path in old_secrets and old_secrets[path] != value and _get(b, path) == REDACTED:
            _set(b, path, CHANGED)
    return a, b


def _get(data: Any, path: Path) -> Any:
    for step in path:
        data = data[step]
    return data


def secret_fields(model: type[BaseModel]) -> dict[str, SecretKind]:
    """Every marked field below `model` (e.g. `Config`), by a path like
    ``webhooks[].token``: for tests and documentation."""
    out: dict[str, SecretKind] = {}
    for path, info in walk_fields(model):
        kind = secret_kind(info)
        if kind is not None:
            out[path] = kind
    return out


def walk_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """(path, field) for every field of `model` and of the models below it."""
    seen: set[type[BaseModel]] = set()

    def walk(m: type[BaseModel], pre: str) -> Iterator[tuple[str, FieldInfo]]:
        if m in seen:
            return
        seen.add(m)
        for name, info in m.model_fields.items():
            key = info.alias or name
            path = f"{pre}{key}"
            yield path, info
            ann = info.annotation
            for sub in _models(ann):
                yield from walk(sub, path + ".")
            item = _items(ann)
            if item is not None:
                for sub in _models(item):
                    yield from walk(sub, path + "[].")
            vals = _values(ann)
            if vals is not None:
                for sub in _models(vals):
                    yield from walk(sub, path + "{}.")
        seen.discard(m)

    yield from walk(model, prefix)
