"""Typed errors with stable codes: the one table of exit codes and HTTP statuses.

Every error class of the package lives here and says its `code` (stable, crosses the
control socket), its `exit_code` (the CLI) and its `http_status` (the web role and the
fleet server both read it; `status_of` also for an error that came over the control
socket as a bare code). Input errors are `BadRequest` (400) or `Invalid` (422), both
naming the field path; server-side failures are 5xx.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ApplianceError(Exception):
    """An error a person should read: one line, a stable code, an exit status."""

    code = "error"
    exit_code = 1
    http_status = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ConfigInvalid(ApplianceError):
    """The configuration document does not validate.

    `errors` lists (path, message, line): the path of the bad field
    (`conduits[2].services[0]`), what is wrong, and the YAML line when known.
    """

    code = "config-invalid"
    exit_code = 2
    http_status = 422

    def __init__(
        self, errors: list[tuple[str, str, int | None]], source: str | None = None
    ) -> None:
        self.errors = errors
        self.source = source
        lines = self.lines()
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        super().__init__(lines[0] + more)

    def __str__(self) -> str:
        return self.message

    def lines(self) -> list[str]:
        out = []
        for path, msg, line in self.errors:
            where = self.source or ""
            if line:
                where = f"{where}:{line}" if where else f"line {line}"
            text = f"{path}: {msg}" if path else msg
            out.append(f"{where}: {text}" if where else text)
        return out


class NotFound(ApplianceError):
    code = "not-found"
    exit_code = 3
    http_status = 404


class Conflict(ApplianceError):
    """The request does not fit the current state (e.g. nothing pending to confirm)."""

    code = "conflict"
    exit_code = 4
    http_status = 409


class ApplyFailed(ApplianceError):
    """The kernel refused a ruleset or a link change; nothing was changed."""

    code = "apply-failed"
    exit_code = 5
    http_status = 409


class LabError(ApplianceError):
    code = "lab-error"
    exit_code = 6
    http_status = 500


class PermissionDenied(ApplianceError):
    code = "permission-denied"
    exit_code = 77
    http_status = 403


class Timeout(ApplianceError):
    code = "timeout"
    exit_code = 8
    http_status = 504


class BadRequest(ApplianceError):
    """A request the receiver refuses: `field` names what is wrong (`events[3].id`), and
    `errors` lists every (path, message) when there are several."""

    code = "bad-request"
    exit_code = 2
    http_status = 400

    def __init__(
        self, message: str, field: str | None = None, errors: Sequence[dict[str, Any]] = ()
    ) -> None:
        super().__init__(message, field=field)
        self.errors = list(errors) or [{"path": field, "message": message}]

    def as_dict(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field, "errors": self.errors}


class Invalid(BadRequest):
    """A value a person gave is not acceptable (the field says which): 422."""

    code = "invalid"
    exit_code = 2
    http_status = 422

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field)


class UnsupportedMediaType(BadRequest):
    """A body of a type the endpoint does not read (a heartbeat is application/json)."""

    code = "unsupported-media-type"
    exit_code = 2
    http_status = 415


class Unauthorized(ApplianceError):
    """Nobody (or a credential we do not know) is asking."""

    code = "unauthorized"
    exit_code = 77
    http_status = 401


class Throttled(ApplianceError):
    """Too many failures, or too much at once: try again in `retry_after` seconds."""

    code = "throttled"
    exit_code = 9
    http_status = 429

    def __init__(self, message: str, retry_after: float, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


class Busy(Throttled):
    """Every slot of this process is taken (argon2 hashes, SQL queries): try again shortly."""

    code = "throttled"
    exit_code = 9
    http_status = 429


class TooManyAttempts(ApplianceError):
    """The fleet server's login: too many wrong passwords in the window."""

    code = "too-many-attempts"
    exit_code = 1
    http_status = 429


class Unavailable(ApplianceError):
    """Another role this request needs is not running."""

    code = "unavailable"
    exit_code = 10
    http_status = 503


class AuditBroken(ApplianceError):
    """The audit log's hash chain does not hold: a row was changed, removed or inserted."""

    code = "audit-broken"
    exit_code = 11
    http_status = 500


class AuditFailed(ApplianceError):
    """An audit row could not be written (disk full, database read-only or failing): the
    change it records was not made (IEC 62443-4-2 CR 2.10: never done but not audited)."""

    code = "audit-failed"
    exit_code = 12
    http_status = 503


class DeviceError(ApplianceError):
    """A field device did not give what was asked: `kind` says how (see field/modbus.py)."""

    code = "device-error"
    exit_code = 1
    http_status = 502

    def __init__(self, kind: str, message: str, *, exception_code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.exception_code = exception_code

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


# OPC UA failures that are about the request (a value the node cannot take, a tag it
# does not have, one that is not writable), not about the device: answered as bad input.
_OPCUA_REQUEST_KINDS = frozenset({"value", "node", "write"})


class OpcUaError(ApplianceError):
    """An OPC UA device failed: `kind` says what failed (connect, timeout, auth, ...).

    A failure of the request (`kind` value, node, write) carries the code `bad-request`
    (400); the device's own failures `device-error` (502)."""

    code = "device-error"
    exit_code = 1
    http_status = 502

    def __init__(self, kind: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.kind = kind
        if kind in _OPCUA_REQUEST_KINDS:
            self.code = BadRequest.code


class FleetError(ApplianceError):
    """A delivery to the fleet server that did not work: `kind` is tls, unreachable or http."""

    code = "fleet-error"
    exit_code = 1
    http_status = 502

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class UnsafeSecretPath(ApplianceError):
    """A secret's directory or file is not what it must be (a symlink, someone else's)."""

    code = "unsafe-secret-path"
    exit_code = 77
    http_status = 500


def _classes(cls: type[ApplianceError] = ApplianceError) -> list[type[ApplianceError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_classes(sub))
    return out


def status_of(e: ApplianceError) -> int:
    """The HTTP status of an error: its class's, or, for an error whose code is not its
    class's (one that came over the control socket as a code), the status of that code."""
    if e.code == type(e).code:
        return e.http_status
    for cls in _classes():
        if cls.code == e.code:
            return cls.http_status
    return ApplianceError.http_status
