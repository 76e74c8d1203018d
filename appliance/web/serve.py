"""Serving the web app: gunicorn over HTTPS, a plain-HTTP listener that only redirects,
and the pure choice of addresses to listen on.

Where it listens (`listen_addresses`, pure): the addresses of the configuration's
mgmt interfaces, plus the IT interfaces' when `web.listen_it`; without a
configuration, the addresses the net role reports on mgmt-role NICs; never an
OT address; and when none of those exists (yet), 127.0.0.1 only.

`python -m appliance.web.serve --bind ADDR:PORT ... --certfile C --keyfile K` runs
gunicorn (`GunicornApp`, a BaseApplication: gthread workers bounded against slow
clients, `appliance.web.worker`, and TLS) in its own process; the web role (`role.py`)
starts it, restarts it when the addresses change, and stops it. The gunicorn process
dies with its parent (PR_SET_PDEATHSIG, which it sets itself at its start:
`die_with_parent`), so a killed role never leaves a server holding the ports.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from appliance.config.model import Config
from appliance.paths import Paths

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
WORKERS = int(os.environ.get("APPLIANCE_WEB_WORKERS", "2"))
THREADS = int(os.environ.get("APPLIANCE_WEB_THREADS", "8"))


def _ip(text: str) -> str:
    return str(ipaddress.ip_interface(text).ip)


def _usable(ip: str) -> bool:
    a = ipaddress.ip_address(ip)
    return not (a.is_link_local or a.is_multicast or a.is_unspecified)


def listen_addresses(config: Config | None, net: Mapping[str, Any] | None) -> tuple[list[str], str]:
    """(addresses to serve on, why), see the module docstring. Pure."""
    ot_nets = []
    if config is not None:
        for iface in config.interfaces_by_role("ot"):
            ot_nets.extend(a.network for a in iface.addresses)

    def not_ot(ip: str) -> bool:
        a = ipaddress.ip_address(ip)
        return not any(a in n for n in ot_nets)

    if config is not None:
        roles = ("mgmt", "it") if config.web.listen_it else ("mgmt",)
        out = [
            str(a.ip)
            for role in roles
            for iface in config.interfaces_by_role(role)
            for a in iface.addresses
        ]
        out = [a for a in dict.fromkeys(out) if _usable(a) and not_ot(a)]
        if out:
            return out, f"the {' and '.join(roles)} interfaces of the configuration"
    found = []
    for link in (net or {}).get("links") or []:
        if link.get("role") == "mgmt":
            for a in link.get("addresses") or []:
                with contextlib.suppress(ValueError):
                    found.append(_ip(a))
    found = [a for a in dict.fromkeys(found) if _usable(a) and not_ot(a)]
    if found:
        return found, "the addresses found on mgmt-role NICs"
    return [LOOPBACK], "no management address known: only 127.0.0.1"


def can_bind(address: str) -> bool:
    """Whether this host has `address` now (a bind to an ephemeral port succeeds)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((address, 0))
        return True
    except OSError:
        return False
    finally:
        s.close()


def bind_spec(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def authority(address: str, port: int) -> str:
    """host[:port] of an HTTPS URL (the port only when not 443)."""
    host = f"[{address}]" if ":" in address else address
    return host + ("" if port == 443 else f":{port}")


def url(address: str, port: int) -> str:
    return f"https://{authority(address, port)}/"


# -- the HTTP → HTTPS redirect ------------------------------------------------------------


REDIRECT_TIMEOUT_S = 5.0
REDIRECT_MAX_CONNECTIONS = 32


class _Redirect(BaseHTTPRequestHandler):
    """Every request to https://<the address it came to>:<https_port><path>. A client has
    `timeout` seconds per read (a silent connection is closed), and the listener holds at
    most REDIRECT_MAX_CONNECTIONS at once (each is a thread of the web role's process;
    more are closed unanswered)."""

    https_port = 443
    timeout = REDIRECT_TIMEOUT_S
    server_version = "appliance"
    sys_version = ""

    def _go(self) -> None:
        local = self.connection.getsockname()[0]
        host = f"[{local}]" if ":" in local else local
        port = "" if self.https_port == 443 else f":{self.https_port}"
        path = self.path if self.path.startswith("/") else "/"
        self.send_response(301 if self.command in ("GET", "HEAD") else 308)
        self.send_header("Location", f"https://{host}{port}{path}")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _go

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("redirect: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 64  # the listen backlog: a burst of connections waits, briefly

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(REDIRECT_MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # a flood: closed unanswered
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Server6(_Server):
    address_family = socket.AF_INET6


class RedirectListeners:
    """Plain-HTTP listeners (one per address) that send everyone to HTTPS."""

    def __init__(self) -> None:
        self._servers: list[tuple[ThreadingHTTPServer, threading.Thread]] = []
        self.listening: list[str] = []

    def start(self, addresses: Iterable[str], port: int, https_port: int) -> list[str]:
        self.stop()
        handler = type("Redirect", (_Redirect,), {"https_port": https_port})
        errors = []
        for a in addresses:
            try:
                srv = (_Server6 if ":" in a else _Server)((a, port), handler)
            except OSError as e:
                errors.append(f"http {bind_spec(a, port)}: {e.strerror}")
                continue
            t = threading.Thread(
                target=srv.serve_forever,
                kwargs={"poll_interval": 0.5},
                name=f"redirect {a}",
                daemon=True,
            )
            t.start()
            self._servers.append((srv, t))
            self.listening.append(bind_spec(a, port))
        return errors

    def stop(self) -> None:
        for srv, t in self._servers:
            srv.shutdown()
            srv.server_close()
            t.join(timeout=2)
        self._servers = []
        self.listening = []


# -- gunicorn -----------------------------------------------------------------------------


def _ssl_context(_conf: Any, default_ssl_context_factory: Any) -> Any:
    """gunicorn's context (certificate and key loaded) with the web role's TLS policy."""
    from appliance.web.tls import harden

    return harden(default_ssl_context_factory())


def _gunicorn_app(paths: Paths, binds: list[str], certfile: str, keyfile: str) -> Any:
    from gunicorn.app.base import BaseApplication

    class GunicornApp(BaseApplication):  # type: ignore[misc]
        def __init__(self) -> None:
            self.options = {
                "bind": binds,
                "certfile": certfile,
                "keyfile": keyfile,
                "worker_class": "appliance.web.worker.BoundedThreadWorker",
                "workers": WORKERS,
                "threads": THREADS,
                "timeout": 60,
                "graceful_timeout": 2,
                "keepalive": 5,
                "accesslog": None,
                "errorlog": "-",
                "loglevel": "info",
                "proc_name": "appliance-web",
                "forwarded_allow_ips": "",
                "limit_request_line": 8190,
                "control_socket_disable": True,
                "ssl_context": _ssl_context,
            }
            super().__init__()

        def load_config(self) -> None:
            for key, value in self.options.items():
                if key in self.cfg.settings and value is not None:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            from appliance.web.app import create_app

            return create_app(paths)

    return GunicornApp()


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """The server gets SIGTERM when the role process that started it dies.

    The server sets this itself, first thing in `main` (a preexec_fn would run Python
    between fork and exec in the threaded role process). The role may have died
    before that: then `parent`, the pid that started us (`--parent-pid`), is no longer
    our parent, no signal will ever come, and the server exits at once instead of
    holding the ports as an orphan."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent is not None and os.getppid() != parent:
        sys.exit(f"appliance.web.serve: the process that started it (pid {parent}) is gone")


def command(
    paths: Paths, binds: list[str], certfile: Path, keyfile: Path, parent: int | None = None
) -> list[str]:
    """The server's argv; `parent` (default: this process, which is to start it) is the
    pid it dies with (`die_with_parent`)."""
    argv = [
        sys.executable,
        "-m",
        "appliance.web.serve",
        "--data-dir",
        str(paths.data_dir),
        "--run-dir",
        str(paths.run_dir),
        "--certfile",
        str(certfile),
        "--keyfile",
        str(keyfile),
        "--parent-pid",
        str(os.getpid() if parent is None else parent),
    ]
    for b in binds:
        argv += ["--bind", b]
    return argv


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="appliance.web.serve")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--bind", action="append", required=True)
    ap.add_argument("--certfile", required=True)
    ap.add_argument("--keyfile", required=True)
    ap.add_argument("--parent-pid", type=int, help="exit with this process (see die_with_parent)")
    ns = ap.parse_args(argv)
    die_with_parent(ns.parent_pid)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths = Paths(Path(ns.data_dir), Path(ns.run_dir))
    sys.argv = sys.argv[:1]  # gunicorn reads sys.argv for its own options
    _gunicorn_app(paths, ns.bind, ns.certfile, ns.keyfile).run()


if __name__ == "__main__":
    main()
