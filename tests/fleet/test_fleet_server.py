"""The fleet receiver's `serve` flags as an outsider types them: a wrong one is one line,
exit 2 (bad input, as for every other command), and what it says is what it takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import ApplianceError
from appliance.fleet.server import check_tls, parse_listen


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:\u0663\u0663",  # Arabic-Indic 33: int() read port 33, serve listened there
        "127.0.0.1:\uff13\uff13",  # fullwidth digits
        "127.0.0.1:+443",
        "127.0.0.1: 443",
        "127.0.0.1:4_43",
        "127.0.0.1:",
    ],
)
def test_a_port_is_ascii_digits(text: str) -> None:
    with pytest.raises(ApplianceError, match="is not a number") as exc:
        parse_listen(text)
    assert exc.value.field == "--listen" and exc.value.exit_code == 2


@pytest.mark.parametrize(
    "text", ["8443", "::1:8443", "host.example:8443", "1.2.3.4:70000", "0.0.0.0:-1", "[::1]:0"]
)
def test_a_bad_listen_address_is_exit_2(text: str) -> None:
    with pytest.raises(ApplianceError) as exc:
        parse_listen(text)
    assert exc.value.field == "--listen" and exc.value.exit_code == 2


def test_tls_flag_errors_are_exit_2_and_say_what_is_wrong(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for cert, key, field, words in [
        (str(garbage), None, "--key", "needs both --cert and --key"),
        (str(tmp_path / "none.pem"), str(garbage), "--cert", "no such file"),
        (str(garbage), str(garbage), "--cert", "not a matching PEM certificate and key"),
    ]:
        with pytest.raises(ApplianceError) as exc:
            check_tls(cert, key)
        e = exc.value
        assert e.field == field and e.exit_code == 2, (e.field, e.exit_code)
        assert words in e.message and "None" not in e.message, e.message
