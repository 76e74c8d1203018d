"""`appliance diagnostics`: one archive a support engineer can read, with no secret in it.

`build(paths) -> bytes` (a .tar.gz) holds: versions, health and its reasons,
the running and pending configuration with secrets redacted, the ruleset read
back from the kernel, the links (``ip -j addr``), recent events, audit lines
and alarms, the last 6 hours of each role's journal, and disk and database
figures (sizes and row counts only: no table of users or tokens is dumped).

Secrets are kept out twice. First every document is redacted by key before it
is rendered: the configurations with `appliance.config.redact.redact_data`,
which knows each secret field from the models (and keeps a webhook URL's host
but not its credentials), every other document (events, audit, live state) by
the names of its keys (password, token, secret, hash, salt, ..._key,
setup_code ...) and the shapes of its strings (PEM private keys, URL user info,
``key=``/``token=``/``sig=`` query values). Then, as a second belt, `scrub`
removes from every file of the archive the same shapes and each secret value
known to the unit of 8 characters or more (those of the configuration, the
contents of the secrets directory, and any column of the databases whose name
says it holds a secret), should one have slipped into a log line or an event
message; a shorter value is not searched for, as replacing it would garble the
text, and needs no search: it was redacted by key. A part that cannot be read
becomes a note in the archive, not an error: support wants the rest anyway.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import shutil
import sqlite3
import sys
import tarfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from appliance import __version__, proc, secretfile
from appliance.config.model import Config
from appliance.config.redact import (
    REDACTED,
    is_secret_key,
    redact_any,
    redact_data,
    redact_text,
)
from appliance.errors import ApplianceError
from appliance.paths import Paths
from appliance.roles import ROLE_NAMES

MIN_SCRUB_LEN = 8  # shorter values are redacted by key only (scrubbing "1234" would garble)
JOURNAL_SINCE = "-6h"
EVENTS_LIMIT = 1000
AUDIT_LIMIT = 500
REVISIONS_SCANNED = 1000  # earlier revisions whose secrets free text is scrubbed of


# -- redaction (pure) ----------------------------------------------------------------


def redact(obj: Any, secrets: set[str] | None = None) -> Any:
    """A copy of `obj` (any JSON data) with every secret value replaced, by the name of its
    key (password, token, ..._key ...) and by its shape (PEM private keys, a URL's user info
    and sensitive query values); found values go into `secrets`. A configuration document
    is redacted with `redact_data`, which knows its secret fields from the models."""
    return redact_any(obj, secrets)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` without PEM private keys, URL credentials (by their shape) and any of the known
    secret values of 8 characters or more (longest first): the second belt, for free text
    (events, journals) a secret may have slipped into; documents are redacted by key."""
    text = redact_text(text)
    for s in sorted({s for s in secrets if len(s) >= MIN_SCRUB_LEN}, key=len, reverse=True):
        text = text.replace(s, REDACTED)
        # the same value as JSON would escape it
        escaped = json.dumps(s)[1:-1]
        if escaped != s:
            text = text.replace(escaped, REDACTED)
    return text


# -- gathering -------------------------------------------------------------------------


_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}  # the system's tools


def _run(argv: list[str], timeout: float = 20.0) -> tuple[int, str]:
    """(exit status, output or error text): a command that cannot run is a note in the
    archive, with the shell's statuses, 127 (not installed) and 124 (no answer)."""
    try:
        p = proc.run(argv, check=False, timeout=timeout, env=_ENV)
    except ApplianceError as e:
        missing = isinstance(e.__cause__, FileNotFoundError)
        return (127 if missing else 124), str(e)
    return p.returncode, p.stdout if p.returncode == 0 else (p.stderr or p.stdout)


def versions() -> dict[str, Any]:
    pkgs = {}
    for name in ("pydantic", "peewee", "Flask", "pymodbus", "asyncua", "gpiozero", "cryptography"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            pkgs[name] = metadata.version(name)
    os_release = {}
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                os_release[k] = v.strip('"')
    u = platform.uname()
    return {
        "appliance": __version__,
        "python": sys.version,
        "kernel": f"{u.system} {u.release} {u.version}",
        "machine": u.machine,
        "hostname": u.node,
        "os": os_release.get("PRETTY_NAME"),
        "packages": pkgs,
    }


def secrets_dir_values(paths: Paths) -> set[str]:
    """The contents of every file in the secrets directory (and their long lines)."""
    out: set[str] = set()
    root = paths.secrets_dir
    if not root.is_dir():
        return out
    for p in root.rglob("*"):
        if p.is_symlink() or not p.is_file():
            continue
        try:  # root reads what the roles could have planted: no symlink, bounded size
            text = secretfile.read(p).decode(errors="replace")
        except (OSError, ApplianceError):
            continue
        if text.strip():
            out.add(text.strip())
        out.update(line.strip() for line in text.splitlines() if len(line.strip()) >= 16)
    return out


def _sqlite_ro(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    conn.execute("PRAGMA query_only=ON")
    return conn


def database_figures(paths: Paths, secrets: set[str]) -> dict[str, Any]:
    """Sizes and row counts per table; secret-named columns feed `secrets` (never the archive)."""
    out: dict[str, Any] = {}
    for name in ("config.db", "history.db"):
        path = paths.data_dir / name
        if not path.exists():
            out[name] = {"note": "missing"}
            continue
        sizes = {
            p.name: p.stat().st_size
            for p in path.parent.glob(name + "*")
            if p.is_file() and p.name in (name, name + "-wal", name + "-shm")
        }
        tables: dict[str, Any] = {}
        try:
            conn = _sqlite_ro(path)
        except sqlite3.Error as e:
            out[name] = {"bytes": sizes, "note": f"cannot open: {e}"}
            continue
        try:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                    " ORDER BY name"
                )
            ]
            for t in names:
                q = t.replace('"', '""')
                try:
                    tables[t] = conn.execute(f'SELECT count(*) FROM "{q}"').fetchone()[0]
                    for col in conn.execute(f'PRAGMA table_info("{q}")'):
                        if not is_secret_key(str(col[1])):
                            continue
                        c = str(col[1]).replace('"', '""')
                        rows = conn.execute(
                            f'SELECT "{c}" FROM "{q}" WHERE "{c}" IS NOT NULL LIMIT 100000'
                        )
                        secrets.update(str(r[0]) for r in rows if r[0] != "")
                except sqlite3.Error as e:
                    tables[t] = f"error: {e}"
        finally:
            conn.close()
        out[name] = {"bytes": sizes, "rows": tables}
    return out


def disk_figures(paths: Paths) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, d in (("data_dir", paths.data_dir), ("run_dir", paths.run_dir)):
        try:
            u = shutil.disk_usage(d)
            out[label] = {
                "path": str(d),
                "total": u.total,
                "used": u.used,
                "free": u.free,
                "free_percent": round(100 * u.free / u.total, 2) if u.total else None,
            }
        except OSError as e:
            out[label] = {"path": str(d), "note": f"cannot stat: {e.strerror}"}
    files = {}
    if paths.data_dir.is_dir():
        for p in sorted(paths.data_dir.iterdir()):
            if p.is_file():
                files[p.name] = p.stat().st_size
            elif p.is_dir():
                files[p.name + "/"] = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    out["data_files"] = files
    return out


def ruleset() -> tuple[str, str]:
    """(file name, content) of the kernel's ruleset as read back, or a note."""
    try:
        from appliance.net.nft import Nft

        listing = Nft().list_table()
    except Exception as e:  # any failure of the bindings is a note, not a failed archive
        return "ruleset.txt", f"could not read the ruleset: {e}\n"
    if listing is None:
        why = "" if os.geteuid() == 0 else " (or not permitted: run as root)"
        return "ruleset.txt", f"the kernel holds no appliance table{why}\n"
    return "ruleset.json", json.dumps({"nftables": listing}, indent=1) + "\n"


def journal(role: str) -> str:
    rc, out = _run(
        [
            "journalctl",
            "-u",
            f"appliance-{role}",
            "--since",
            JOURNAL_SINCE,
            "--no-pager",
            "-o",
            "short-iso",
        ]
    )
    if rc != 0:
        return f"journalctl for appliance-{role} did not work (exit {rc}): {out.strip()}\n"
    return out


def configuration(paths: Paths, secrets: set[str]) -> dict[str, Any]:
    from appliance.state import revisions as revs
    from appliance.state.db import Audit, Revision, borrowed_store

    out: dict[str, Any] = {}
    with borrowed_store(paths.data_dir) as store:
        for label, finder in (("running", revs.desired), ("pending", revs.pending)):
            rev = finder(store)
            if rev is None:
                out[label] = None
                continue
            doc = json.loads(rev.document)
            meta = rev.as_dict()
            out[label] = {
                "revision": redact(meta, secrets),
                "config": redact_data(doc, Config, secrets),
            }
        # a secret of an earlier revision (a token since changed) may still be in an
        # old event or journal line: collect those too, for the scrub of free text
        for (document,) in (
            Revision.select(Revision.document)
            .order_by(Revision.id.desc())
            .limit(REVISIONS_SCANNED)
            .tuples()
        ):
            with contextlib.suppress(ValueError, TypeError):
                redact_data(json.loads(document), Config, secrets)
        out["events"] = [e.as_dict() for e in store.events(EVENTS_LIMIT)]

        out["audit"] = [
            {k: getattr(a, k) for k in ("at", "actor", "source", "action", "target", "result")}
            | {"detail": a.detail}
            for a in Audit.select().order_by(Audit.id.desc()).limit(AUDIT_LIMIT)
        ]
        out["alarms"] = _alarms(store, paths)
    return out


def _alarms(store: Any, paths: Paths) -> Any:
    from appliance.state.live import LiveState

    live = LiveState(paths.run_dir)
    try:
        from appliance.field import api  # the field area's reader, when it exists

        return api.list_alarms(store, live, False, 500)
    except Exception as e:  # not there yet, or failing: the live document still tells
        field = live.read("field") or {}
        return {"note": f"from field.json ({e.__class__.__name__})", **(field.get("alarms") or {})}


def health_now(paths: Paths) -> dict[str, Any]:
    from appliance.state.live import LiveState

    live = LiveState(paths.run_dir)
    agent = live.read("agent")
    if agent and live.alive("agent"):
        return {"source": "agent.json", **(agent.get("health") or {})}
    try:
        from appliance.agent.role import compute_health

        return {"source": "computed (agent not running)", **compute_health(paths).as_dict()}
    except Exception as e:  # support still wants the rest of the archive
        return {"note": f"could not compute health: {e}"}


# -- the archive -------------------------------------------------------------------------


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n"


def gather(paths: Paths) -> tuple[dict[str, str], set[str]]:
    """Every file of the archive (name -> text) and the secrets found on the way."""
    secrets: set[str] = set()
    secrets |= secrets_dir_values(paths)
    files: dict[str, str] = {}

    def part(name: str, fn: Any) -> None:
        try:
            files[name] = fn()
        except Exception as e:  # one unreadable part must not cost the others
            files[name + ".error.txt"] = f"{e.__class__.__name__}: {e}\n"

    part("versions.json", lambda: _dump(versions()))
    files["database.json"] = _dump(database_figures(paths, secrets))
    try:
        conf = configuration(paths, secrets)
    except Exception as e:  # a broken DB: say so, keep the rest
        conf = {}
        files["configuration.error.txt"] = f"{e.__class__.__name__}: {e}\n"
    for label in ("running", "pending"):
        if label in conf:
            c = conf[label]
            files[f"config/{label}.yaml"] = (
                "# no revision\n"
                if c is None
                else yaml.safe_dump(c["config"], sort_keys=False, default_flow_style=False)
            )
            if c is not None:
                files[f"config/{label}-revision.json"] = _dump(c["revision"])
    for label in ("events", "audit", "alarms"):
        if label in conf:
            files[f"{label}.json"] = _dump(redact(conf[label], secrets))
    part("health.json", lambda: _dump(health_now(paths)))
    name, text = ruleset()
    files[name] = text
    rc, out = _run(["ip", "-j", "addr"])
    files["links.json" if rc == 0 else "links.txt"] = out
    rc, out = _run(["ip", "-j", "route"])
    files["routes.json" if rc == 0 else "routes.txt"] = out
    from appliance.state.live import LiveState

    live = LiveState(paths.run_dir)
    for role in (*ROLE_NAMES, "supervisor"):
        doc = live.read(role)
        if doc is not None:
            files[f"live/{role}.json"] = _dump(redact(doc, secrets))
    for role in ROLE_NAMES:
        files[f"journal/{role}.txt"] = journal(role)
    part("disk.json", lambda: _dump(disk_figures(paths)))
    return files, secrets


def build(paths: Paths, now: float | None = None) -> bytes:
    """The diagnostics archive (.tar.gz) for this unit, secrets redacted."""
    at = time.time() if now is None else now
    files, secrets = gather(paths)
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H%M%SZ")
    top = f"appliance-diagnostics-{stamp}"
    files["README.txt"] = (
        f"appliance {__version__} diagnostics, made {datetime.fromtimestamp(at, UTC)}\n"
        "Secrets (passwords, tokens, keys, hashes, setup code, the secrets directory, "
        "credentials in URLs) are "
        f"replaced by {REDACTED}.\nFiles:\n" + "".join(f"  {n}\n" for n in sorted(files))
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in sorted(files):
            data = scrub(files[name], secrets).encode("utf-8", errors="replace")
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mtime = int(at)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
