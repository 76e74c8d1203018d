"""Typed errors: stable codes, exit statuses, and how ConfigInvalid reads."""

from __future__ import annotations

import pytest

from appliance import errors
from appliance.errors import ApplianceError, ConfigInvalid


def test_lines_with_source_and_line() -> None:
    e = ConfigInvalid([("conduits[0].services[0]", "port must be 1-65535", 30)], "site.yaml")
    assert e.lines() == ["site.yaml:30: conduits[0].services[0]: port must be 1-65535"]


def test_lines_without_source_name_the_line() -> None:
    e = ConfigInvalid([("unit.name", "is required", 4)])
    assert e.lines() == ["line 4: unit.name: is required"]


def test_lines_without_line_keep_the_source() -> None:
    e = ConfigInvalid([("conduits[1]", "overlaps", None)], "site.yaml")
    assert e.lines() == ["site.yaml: conduits[1]: overlaps"]


def test_lines_without_path_or_where_are_the_bare_message() -> None:
    e = ConfigInvalid([("", "the document must be a mapping of sections", None)])
    assert e.lines() == ["the document must be a mapping of sections"]


def test_lines_with_line_but_no_path() -> None:
    e = ConfigInvalid([("", "not valid YAML: oops", 7)], "a.yaml")
    assert e.lines() == ["a.yaml:7: not valid YAML: oops"]


def test_str_is_first_line_and_a_count_of_the_rest() -> None:
    e = ConfigInvalid(
        [("a", "first", 1), ("b", "second", 2), ("c", "third", None)], source="x.yaml"
    )
    assert str(e) == "x.yaml:1: a: first (and 2 more)"
    assert len(e.lines()) == 3


def test_str_of_a_single_error_has_no_count() -> None:
    e = ConfigInvalid([("a", "first", 1)], source="x.yaml")
    assert str(e) == "x.yaml:1: a: first"


def test_plain_error_with_field_prefixes_it() -> None:
    assert str(ApplianceError("bad", field="unit.name")) == "unit.name: bad"
    assert str(ApplianceError("bad")) == "bad"


@pytest.mark.parametrize(
    ("cls", "code", "exit_code"),
    [
        (errors.ApplianceError, "error", 1),
        (errors.ConfigInvalid, "config-invalid", 2),
        (errors.NotFound, "not-found", 3),
        (errors.Conflict, "conflict", 4),
        (errors.ApplyFailed, "apply-failed", 5),
        (errors.LabError, "lab-error", 6),
        (errors.PermissionDenied, "permission-denied", 77),
        (errors.Timeout, "timeout", 8),
    ],
)
def test_codes_and_exit_statuses_are_stable(cls: type, code: str, exit_code: int) -> None:
    assert cls.code == code
    assert cls.exit_code == exit_code
    assert issubclass(cls, ApplianceError)


# Since errors.py holds every error class (issue 10), some classes share an exit status
# or a code on purpose: these groups and no others (each is one kind of failure to a script).
SHARED_EXIT = {
    1: {"ApplianceError", "DeviceError", "OpcUaError", "FleetError", "TooManyAttempts"},
    2: {"ConfigInvalid", "BadRequest", "Invalid", "UnsupportedMediaType"},
    9: {"Throttled", "Busy"},
    77: {"PermissionDenied", "Unauthorized", "UnsafeSecretPath"},
}
SHARED_CODE = {"throttled": {"Throttled", "Busy"}, "device-error": {"DeviceError", "OpcUaError"}}


def test_exit_statuses_are_distinct() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    statuses = [c.exit_code for c in classes if c.exit_code not in SHARED_EXIT]
    assert len(statuses) == len(set(statuses))
    for status, names in SHARED_EXIT.items():
        assert {c.__name__ for c in classes if c.exit_code == status} == names
    codes = [c.code for c in classes if c.code not in SHARED_CODE]
    assert len(codes) == len(set(codes))
    for code, names in SHARED_CODE.items():
        assert {c.__name__ for c in classes if c.code == code} == names
