"""Reading documents: every error names the path of the bad field and its YAML line."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from appliance.config.load import (
    canonical_json,
    format_path,
    load_text,
    sha256_of,
    to_yaml,
)
from appliance.config.model import Config
from appliance.errors import ConfigInvalid

from .factory import NOW

ROOT = Path(__file__).resolve().parents[2]

# Line numbers matter below; they are written next to the lines.
DOC = """\
version: 1
unit:
  name: test-unit
interfaces:
  - name: it0
    role: it
    addresses: [10.10.0.1/24]
  - name: ot0
    role: ot
    addresses: [192.168.50.1/24]
conduits:
  - name: scada-modbus
    owner: ot-team
    reason: SCADA polls PLC 1
    from: [10.10.0.2]
    to: [192.168.50.10]
    services: [modbus]
"""
#  1 version   4 interfaces   5 it0   8 ot0   11 conduits   12 name   15 from   16 to
#  17 services


def errors_of(text: str, source: str | None = "site.yaml", now: datetime | None = NOW):
    with pytest.raises(ConfigInvalid) as exc:
        load_text(text, source, now=now)
    return exc.value


def test_the_base_document_is_valid() -> None:
    loaded = load_text(DOC, "site.yaml", now=NOW)
    assert loaded.warnings == []
    assert [c.name for c in loaded.config.conduits] == ["scada-modbus"]


def test_bad_port_names_the_item_and_its_line() -> None:
    e = errors_of(DOC.replace("services: [modbus]", "services: [tcp/70000]"))
    assert e.errors == [("conduits[0].services[0]", "70000 is not a port: ports are 1-65535", 17)]
    assert e.lines() == [
        "site.yaml:17: conduits[0].services[0]: 70000 is not a port: ports are 1-65535"
    ]


def test_bad_second_service_names_index_one() -> None:
    text = DOC.replace("services: [modbus]", "services:\n      - modbus\n      - tcp/x")
    e = errors_of(text)
    assert len(e.errors) == 1
    path, msg, line = e.errors[0]
    assert path == "conduits[0].services[1]"
    assert msg.startswith("unknown service 'tcp/x'")
    assert line == 19


def test_bad_allow_in_names_the_item() -> None:
    text = DOC.replace("    role: it\n", "    role: it\n    allow_in: [https, tcp/99999]\n")
    e = errors_of(text)
    assert e.errors == [("interfaces[0].allow_in[1]", "99999 is not a port: ports are 1-65535", 7)]


def test_unknown_key_suggests_the_close_one() -> None:
    e = errors_of(DOC.replace("services: [modbus]", "services: [modbus]\n    servces: [ssh]"))
    assert e.errors == [("conduits[0].servces", "unknown key (did you mean 'services'?)", 18)]


@pytest.mark.parametrize(
    ("old", "new", "path", "hint", "line"),
    [
        ("unit:\n", "uint:\n", "uint", "did you mean 'unit'?", 2),
        ("  name: test-unit\n", "  nmae: test-unit\n", "unit.nmae", "did you mean 'name'?", 3),
        ("    role: ot\n", "    roel: ot\n", "interfaces[1].roel", "did you mean 'role'?", 9),
        ("    from: [", "    form: [", "conduits[0].form", "did you mean 'from'?", 15),
    ],
)
def test_unknown_keys_everywhere(old: str, new: str, path: str, hint: str, line: int) -> None:
    e = errors_of(DOC.replace(old, new, 1))
    found = {p: (m, ln) for p, m, ln in e.errors}
    assert path in found
    assert found[path] == (f"unknown key ({hint})", line)


def test_unknown_key_in_nat_section() -> None:
    e = errors_of(DOC + "nat:\n  port_forward: []\n")
    assert e.errors == [("nat.port_forward", "unknown key (did you mean 'port_forwards'?)", 19)]


def test_unknown_key_without_close_match_lists_the_allowed() -> None:
    e = errors_of(DOC.replace("  name: test-unit\n", "  name: test-unit\n  zzzzzz: 1\n"))
    assert e.errors == [("unit.zzzzzz", "unknown key (allowed: name, site, description)", 4)]


def test_host_bits_set_suggest_the_network() -> None:
    e = errors_of(DOC.replace("to: [192.168.50.10]", "to: [192.168.50.10/24]"))
    assert e.errors == [
        (
            "conduits[0].to[0]",
            "192.168.50.10/24 has host bits set; did you mean 192.168.50.0/24?",
            16,
        )
    ]


def test_not_an_address() -> None:
    e = errors_of(DOC.replace("from: [10.10.0.2]", "from: [10.10.0.2, plc-1]"))
    (path, msg, line) = e.errors[0]
    assert (path, line) == ("conduits[0].from[1]", 15)
    assert msg.startswith("'plc-1' is not an IP address or network")


@pytest.mark.parametrize("value", ["2027-01-31 18:00:00", "2027-01-31T18:00:00", "2027-01-31"])
def test_naive_datetimes_are_refused(value: str) -> None:
    e = errors_of(DOC + f"    expires: {value}\n")
    assert e.errors == [("conduits[0].expires", "needs a time zone, e.g. 2027-01-31T18:00:00Z", 18)]


@pytest.mark.parametrize("value", ["2027-01-31T18:00:00Z", "2027-01-31T19:00:00+01:00"])
def test_aware_datetimes_are_taken(value: str) -> None:
    loaded = load_text(DOC + f"    expires: {value}\n", now=NOW)
    assert loaded.config.conduits[0].expires == datetime(2027, 1, 31, 18, tzinfo=UTC)


def test_missing_keys_point_at_their_mapping() -> None:
    text = DOC.replace(
        "    owner: ot-team\n    reason: SCADA polls PLC 1\n", ""
    )  # conduit now starts at line 12
    e = errors_of(text)
    assert e.errors == [
        ("conduits[0].owner", "is required", 12),
        ("conduits[0].reason", "is required", 12),
    ]


def test_bad_literal() -> None:
    e = errors_of(DOC.replace("    role: ot\n", "    role: dmz\n"))
    assert e.errors == [("interfaces[1].role", "must be it, ot or mgmt, not 'dmz'", 9)]


def test_address_without_prefix_length() -> None:
    e = errors_of(DOC.replace("[10.10.0.1/24]", "[10.10.0.1]"))
    assert e.errors == [
        ("interfaces[0].addresses[0]", "'10.10.0.1' needs a prefix length, e.g. 10.10.0.1/24", 7)
    ]


def test_nat_port_out_of_range() -> None:
    text = DOC + "nat:\n  port_forwards:\n    - {name: pf, port: 0, to_address: 192.168.50.10}\n"
    e = errors_of(text)
    assert e.errors == [("nat.port_forwards[0].port", "0 is not a port: ports are 1-65535", 20)]


def test_nat_to_port_out_of_range() -> None:
    text = (
        DOC
        + "nat:\n  port_forwards:\n"
        + "    - {name: pf, port: 8502, to_address: 192.168.50.10, to_port: 65536}\n"
    )
    e = errors_of(text)
    assert e.errors == [
        ("nat.port_forwards[0].to_port", "65536 is not a port: ports are 1-65535", 20)
    ]


def test_bad_mac() -> None:
    e = errors_of(DOC.replace("    role: it\n", "    role: it\n    mac: 02:a0:00:00:01\n"))
    assert e.errors == [
        ("interfaces[0].mac", "'02:a0:00:00:01' is not a MAC address like 02:a0:00:00:01:01", 7)
    ]


def test_mac_is_normalised() -> None:
    text = DOC.replace("    role: it\n", "    role: it\n    mac: 02-A0-00-00-01-0F\n")
    assert load_text(text, now=NOW).config.interfaces[0].mac == "02:a0:00:00:01:0f"


def test_services_are_normalised() -> None:
    text = DOC.replace("services: [modbus]", "services: [' Modbus', TCP/8080]")
    assert load_text(text, now=NOW).config.conduits[0].services == ["modbus", "tcp/8080"]


def test_several_errors_are_all_reported() -> None:
    text = DOC.replace("role: ot", "role: dmz").replace("[modbus]", "[tcp/0]")
    e = errors_of(text)
    assert [(p, ln) for p, _, ln in e.errors] == [
        ("interfaces[1].role", 9),
        ("conduits[0].services[0]", 17),
    ]
    assert str(e).endswith("(and 1 more)")


def test_yaml_syntax_error_has_a_line() -> None:
    e = errors_of("version: 1\nunit: [1\n")
    assert len(e.errors) == 1
    path, msg, line = e.errors[0]
    assert path == ""
    assert msg.startswith("not valid YAML: ")
    assert line == 3
    assert e.lines()[0].startswith("site.yaml:3: not valid YAML: ")


def test_document_must_be_a_mapping() -> None:
    e = errors_of("- 1\n- 2\n")
    assert e.errors == [("", "the document must be a mapping of sections", 1)]


@pytest.mark.parametrize("text", ["", "{}", "---\n", "# nothing but a comment\n", "version: 1\n"])
def test_an_empty_or_truncated_document_is_refused(text: str) -> None:
    # a truncated upload must never become a revision that removes every conduit
    e = errors_of(text)
    paths = [p for p, _, _ in e.errors]
    assert paths == (["interfaces"] if "version" in text else ["version"])
    assert "is required" in e.errors[0][1]
    assert "truncated" in e.errors[0][1]


def test_a_document_with_empty_interfaces_is_refused() -> None:
    e = errors_of("version: 1\ninterfaces: []\nconduits: []\n")
    assert [(p, ln) for p, _, ln in e.errors] == [("interfaces", 1)]


def test_model_defaults_still_describe_no_configuration() -> None:
    # inside the package Config() stands for "nothing committed yet"
    assert Config().conduits == []


def _laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "version: 1\n" + "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_at_once() -> None:
    import time

    text = _laughs(9)  # under 1 kB, 9**10 strings once expanded
    assert len(text) < 1000
    t0 = time.perf_counter()
    e = errors_of(text)
    assert time.perf_counter() - t0 < 0.5
    assert e.errors == [("", "YAML anchors (&a0) are not allowed: write the value out", 2)]


def test_aliases_and_merge_keys_are_refused() -> None:
    e = errors_of("version: 1\nunit: {name: x}\nweb: *x\n")
    assert "not valid YAML" in e.errors[0][1] or "aliases" in e.errors[0][1]
    e = errors_of("version: 1\nbase: &b {name: x}\nunit:\n  <<: *b\n")
    assert e.errors[0][1].startswith("YAML anchors (&b)")


@pytest.mark.parametrize(
    "unit",
    [
        "{<<: {name: a}}",  # a merge key without an alias: YAML merges it silently
        "{name: a, <<: {name: b}}",  # two values for `name`, and no duplicate-key error
        "{<<: [{name: a}, {site: b}]}",
    ],
)
def test_merge_keys_are_refused_with_their_line(unit: str) -> None:
    e = errors_of(f"version: 1\nunit: {unit}\n")
    assert e.errors == [("", "YAML merge keys (<<) are not allowed: write the keys out", 2)]


def test_a_quoted_double_angle_key_is_a_plain_key() -> None:
    # only the plain scalar << is YAML's merge key; a quoted one is a key like any other
    e = errors_of(DOC.replace("  name: test-unit", '  "<<": x'))
    assert [(p, ln) for p, _, ln in e.errors] == [("unit.<<", 3)]
    assert e.errors[0][1].startswith("unknown key")


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("!!binary aGVsbG8=", "!!binary"),  # bytes, which a text field took as 'hello'
        ("!<tag:yaml.org,2002:binary> aGVsbG8=", "!!binary"),
        ("!!timestamp 2001-12-14", "!!timestamp"),
        ("!!set {a, b}", "!!set"),
        ("!!omap [a: 1]", "!!omap"),
        ("!!python/object/apply:os.system [id]", "!!python/object/apply:os.system"),
        ("!custom x", "!custom"),
    ],
)
def test_yaml_tags_beyond_json_types_are_refused(value: str, tag: str) -> None:
    e = errors_of(f"version: 1\nunit:\n  site: {value}\n")
    assert e.errors == [
        ("", f"the YAML tag {tag} is not allowed: write plain text, numbers, lists and maps", 3)
    ]


def test_the_core_tags_are_still_allowed() -> None:
    text = DOC.replace("name: test-unit", "name: !!str test-unit").replace(
        "version: 1", "version: !!int 1"
    )
    assert load_text(text).config.unit.name == "test-unit"


def test_deep_nesting_and_size_are_bounded() -> None:
    import time

    from appliance.config import load

    t0 = time.perf_counter()
    e = errors_of("version: 1\nunit: " + "[" * 40 + "]" * 40 + "\n")
    assert e.errors == [("", "the document nests deeper than 32 levels", 2)]
    e = errors_of("version: 1\nunit: " + "[" * 50000 + "]" * 50000 + "\n")
    assert e.errors[0][1] in (
        "the document nests deeper than 32 levels",
        "not valid YAML: exceeded maximum nesting depth",  # libyaml's own bound, first
    )
    e = errors_of("version: 1\n#" + "x" * load.MAX_DOCUMENT_CHARS + "\n")
    assert e.errors == [("", "the document is larger than 1 MiB", None)]
    assert time.perf_counter() - t0 < 1.0


def test_the_size_bound_is_1_mib() -> None:
    from appliance.config import load

    assert load.MAX_DOCUMENT_CHARS == 1024 * 1024
    e = errors_of("version: 1\n#" + "x" * (1024 * 1024) + "\n")
    assert e.errors == [("", "the document is larger than 1 MiB", None)]
    e = errors_of("version: 1\n#" + "x" * (4 * 1024 * 1024 - 20) + "\n")  # was taken
    assert e.errors == [("", "the document is larger than 1 MiB", None)]


def test_a_document_of_too_many_values_is_refused_quickly() -> None:
    import time

    from appliance.config import load

    # 1 MiB of "1," is 520,000 values: composing and constructing them took seconds
    text = "version: 1\ninterfaces: []\nunit: [" + "1," * 520_000 + "1]\n"
    assert len(text) < load.MAX_DOCUMENT_CHARS
    t0 = time.perf_counter()
    e = errors_of(text)
    elapsed = time.perf_counter() - t0
    assert e.errors == [
        ("", f"the document has more than {load.MAX_NODES} values, maps and lists", 3)
    ]
    assert elapsed < 2.0, elapsed  # ~0.3 s: parse events only, up to the bound


def test_a_3000_conduit_document_is_within_the_bounds() -> None:
    from appliance.config import load

    conduits = "".join(
        f"  - name: c{i}\n"
        "    owner: ot-engineering@plant.example\n"
        f"    reason: SCADA server {i} polls PLC {i} over Modbus TCP for line {i % 40}\n"
        f"    from: [10.10.{i // 250}.{i % 250 + 2}]\n"
        f"    to: [192.168.50.{i % 250 + 2}]\n"
        f"    services: [modbus, tcp/{1000 + i}]\n"
        for i in range(3000)
    )
    text = DOC.split("conduits:")[0] + "conduits:\n" + conduits
    assert len(text) < load.MAX_DOCUMENT_CHARS
    assert len(load_text(text, "big.yaml").config.conduits) == 3000


def test_without_source_lines_say_line() -> None:
    e = errors_of(DOC.replace("[modbus]", "[tcp/0]"), source=None)
    assert e.lines() == ["line 17: conduits[0].services[0]: 0 is not a port: ports are 1-65535"]


# -- document-wide checks get lines too -----------------------------------


def test_check_errors_carry_lines() -> None:
    text = DOC.replace("from: [10.10.0.2]", "from: [10.10.0.2, 192.168.50.7]")
    e = errors_of(text)
    assert e.errors == [
        (
            "conduits[0].from[1]",
            "192.168.50.7/32 is on the OT side (ot0 192.168.50.0/24); `from` lists IT hosts",
            15,
        )
    ]


def test_overlap_error_points_at_the_later_conduit() -> None:
    second = (
        "  - name: scada-all\n"
        "    owner: it\n"
        "    reason: broad\n"
        "    from: [10.10.0.0/24]\n"
        "    to: [192.168.50.0/24]\n"
        "    services: [tcp/1-1024]\n"
    )
    e = errors_of(DOC + second)
    assert len(e.errors) == 1
    path, msg, line = e.errors[0]
    assert path == "conduits[1]"
    assert line == 18
    assert "'scada-modbus' (conduits[0])" in msg


def test_warnings_are_returned_as_text() -> None:
    loaded = load_text(DOC + "    expires: 2025-06-01T00:00:00Z\n", now=NOW)
    assert loaded.warnings == ["conduits[0].expires: already expired: passes nothing"]


# -- helpers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("conduits", 2, "services", 0), "conduits[2].services[0]"),
        (("unit", "name"), "unit.name"),
        (("version",), "version"),
        ((), ""),
        (("nat", "one_to_one", 0, "it_address"), "nat.one_to_one[0].it_address"),
    ],
)
def test_format_path(loc: tuple, path: str) -> None:
    assert format_path(loc) == path


def test_canonical_form_ignores_layout_and_comments() -> None:
    a = load_text(DOC, now=NOW).config
    b_text = "# a comment\n" + DOC.replace("services: [modbus]", "services:\n      - MODBUS")
    b = load_text(b_text, now=NOW).config
    assert canonical_json(a) == canonical_json(b)
    assert sha256_of(a) == sha256_of(b)


def test_sha256_changes_with_content() -> None:
    a = load_text(DOC, now=NOW).config
    b = load_text(DOC.replace("SCADA polls PLC 1", "SCADA polls PLC 2"), now=NOW).config
    assert sha256_of(a) != sha256_of(b)
    assert len(sha256_of(a)) == 64


def test_to_yaml_round_trips() -> None:
    config = load_text(
        DOC
        + "    expires: 2027-01-31T18:00:00Z\n"
        + "nat:\n  masquerade: true\n"
        + "  port_forwards:\n"
        + "    - {name: pf, port: 8502, to_address: 192.168.50.10, to_port: 502}\n",
        now=NOW,
    ).config
    text = to_yaml(config)
    assert "from:" in text  # the alias people write, not `from_`
    again = load_text(text, now=NOW).config
    assert again == config
    assert sha256_of(again) == sha256_of(config)


def test_the_example_demo_configuration_is_valid() -> None:
    path = ROOT / "examples" / "demo.yaml"
    loaded = load_text(path.read_text(), str(path), now=NOW)
    assert loaded.warnings == []
    assert {i.role for i in loaded.config.interfaces} == {"it", "ot", "mgmt"}


def test_error_on_a_key_with_a_block_value_points_at_the_key() -> None:
    text = DOC.replace("  - name: ot0\n    role: ot\n    addresses: [192.168.50.1/24]\n", "")
    e = errors_of(text)
    assert e.errors == [
        ("conduits", "conduits need an interface with role it and one with role ot", 8)
    ]


def test_unquoted_mac_that_yaml_reads_as_a_number() -> None:
    # YAML 1.1 (PyYAML) resolves 12:34:56:00:11:22 as a base-60 integer.
    text = DOC.replace("    role: it\n", "    role: it\n    mac: 12:34:56:00:11:22\n")
    e = errors_of(text)
    msg = "a MAC address of digits only is a number to YAML: put it in quotes"
    assert e.errors == [("interfaces[0].mac", msg, 7)]
    quoted = text.replace("12:34:56:00:11:22", "'12:34:56:00:11:22'")
    assert load_text(quoted, now=NOW).config.interfaces[0].mac == "12:34:56:00:11:22"


def test_duplicate_keys_are_refused_with_both_lines() -> None:
    import pytest

    from appliance.config.load import load_text
    from appliance.errors import ConfigInvalid

    text = "version: 1\nunit:\n  name: a\n  name: b\n"
    with pytest.raises(ConfigInvalid) as err:
        load_text(text, "dup.yaml")
    assert err.value.errors == [("unit.name", "key 'name' appears twice (line 3 and 4)", 4)]


def test_a_document_with_thousands_of_errors_lists_the_first_fifty() -> None:
    # 5,000 bad conduits printed 35,000 error lines in the CLI
    bad = "".join(f"  - {{name: 'C {i}', bogus: 1}}\n" for i in range(2000))
    text = DOC.split("conduits:")[0] + "conduits:\n" + bad
    e = errors_of(text)
    assert len(e.errors) == 51
    assert e.errors[0][0] == "conduits[0].name"
    assert e.errors[-1] == ("", f"{2000 * 7 - 50:,} more errors not shown: fix these first", None)
    overlapping = "".join(
        f"  - {{name: c{i}, owner: o, reason: r, from: [10.10.0.2], to: [192.168.50.10], "
        f"services: ['tcp/0']}}\n"
        for i in range(80)
    )
    e = errors_of(DOC.split("conduits:")[0] + "conduits:\n" + overlapping)
    assert len(e.errors) == 51 and e.errors[-1][1].startswith("30 more errors")


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [("unit:\n\tname: x\n", 3, 1), ("unit:\n  name: x\n  \tsite: y\n", 4, 3)],
)
def test_a_tab_is_named_as_the_trouble(text: str, line: int, column: int) -> None:
    # was: "found character that cannot start any token"
    e = errors_of("version: 1\n" + text)
    assert e.errors == [
        (
            "",
            f"not valid YAML: a tab at column {column}: YAML indents and separates with spaces",
            line,
        )
    ]
