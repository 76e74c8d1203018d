"""Serving the receiver in production: gunicorn (its BaseApplication API), TLS, listen address.

`parse_listen` and `check_tls` are checks made before gunicorn starts, so that a
wrong flag is one line naming it rather than a gunicorn traceback or a retry loop.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from appliance.errors import ApplianceError, Conflict, Invalid, PermissionDenied

DEFAULT_LISTEN = "0.0.0.0:8443"


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def bind(self) -> str:
        """The address as gunicorn's `bind` setting writes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def url(self, tls: bool) -> str:
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if tls else 'http'}://{shown}:{self.port}/"


def parse_listen(text: str) -> Listen:
    """`ADDR:PORT`, `[V6ADDR]:PORT` or `:PORT` (all IPv4 addresses) -> Listen; a wrong one
    is Invalid (exit 2) naming `--listen`."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise Invalid(f"{text!r} must be ADDR:PORT (e.g. 0.0.0.0:8443)", field="--listen")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise Invalid(
            f"{text!r}: write an IPv6 address in brackets, e.g. [::]:8443", field="--listen"
        )
    host = host or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise Invalid(f"{host!r} is not an IP address", field="--listen") from None
    # ASCII digits only: int() also reads '٣٣' (33), '+443', ' 443' and '4_43'
    if not (port_text.isascii() and port_text.isdigit()):
        raise Invalid(f"port {port_text!r} is not a number", field="--listen")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise Invalid(f"port must be 1-65535 (got {port})", field="--listen")
    return Listen(host, port)


def check_bindable(listen: Listen) -> None:
    """Fail with one line now if the address cannot be bound (gunicorn would retry and exit)."""
    try:
        infos = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ApplianceError(f"{listen.host}: {e.strerror}", field="--listen")
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except PermissionError:
            raise PermissionDenied(
                f"{listen.bind}: binding a port below 1024 needs root or CAP_NET_BIND_SERVICE",
                field="--listen",
            )
        except OSError as e:
            if e.errno == 98:  # EADDRINUSE
                raise Conflict(f"{listen.bind} is already in use", field="--listen")
            raise ApplianceError(f"cannot listen on {listen.bind}: {e.strerror}", field="--listen")


def check_tls(cert: str | None, key: str | None) -> bool:
    """True when both files are given and make a usable server certificate; else a
    one-line Invalid (exit 2) naming the flag."""
    if not cert and not key:
        return False
    if not cert or not key:
        missing = "--cert" if not cert else "--key"
        raise Invalid("needs both --cert and --key", field=missing)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for flag, path in (("--cert", cert), ("--key", key)):
        try:
            with open(path, "rb"):
                pass
        except FileNotFoundError:
            raise Invalid(f"{path}: no such file", field=flag) from None
        except OSError as e:
            raise Invalid(f"{path}: cannot read ({e.strerror})", field=flag) from None
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as e:
        # OpenSSL's reason, when it gives one ('KEY_VALUES_MISMATCH'); PEM garbage has none
        why = f" ({e.reason})" if e.reason else ""
        raise Invalid(
            f"{cert} and {key} are not a matching PEM certificate and key{why}", field="--cert"
        ) from None
    return True


class GunicornServer(BaseApplication):
    """gunicorn serving one already-built Flask app with the given settings."""

    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        assert self.cfg is not None
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.application


def gunicorn_options(
    listen: Listen,
    *,
    cert: str | None,
    key: str | None,
    workers: int,
    threads: int,
    access_log: bool,
) -> dict[str, Any]:
    """The gunicorn settings for the receiver (TLS 1.2+ when a certificate is given)."""
    opts: dict[str, Any] = {
        "bind": [listen.bind],
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 30,
        "graceful_timeout": 10,
        "proc_name": "appliance-fleet",
        "control_socket_disable": True,  # gunicorn 24+: no ~/.gunicorn/gunicorn.ctl
        "errorlog": "-",
        "loglevel": "info",
        "accesslog": "-" if access_log else None,
    }
    if cert and key:
        opts["certfile"] = cert
        opts["keyfile"] = key
        opts["ssl_context"] = _ssl_context
    return opts


def _ssl_context(conf: Any, default_factory: Any) -> ssl.SSLContext:
    ctx = default_factory()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def serve(app: Flask, options: dict[str, Any]) -> None:
    """Run gunicorn in the foreground until SIGTERM/SIGINT."""
    GunicornServer(app, options).run()
