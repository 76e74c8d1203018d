"""Typed errors with stable codes; the one place that maps them to exit codes."""

from __future__ import annotations


class ApplianceError(Exception):
    """An error a person should read: one line, a stable code, an exit status."""

    code = "error"
    exit_code = 1

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


class Conflict(ApplianceError):
    """The request does not fit the current state (e.g. nothing pending to confirm)."""

    code = "conflict"
    exit_code = 4


class ApplyFailed(ApplianceError):
    """The kernel refused a ruleset or a link change; nothing was changed."""

    code = "apply-failed"
    exit_code = 5


class LabError(ApplianceError):
    code = "lab-error"
    exit_code = 6


class PermissionDenied(ApplianceError):
    code = "permission-denied"
    exit_code = 77


class Timeout(ApplianceError):
    code = "timeout"
    exit_code = 8
