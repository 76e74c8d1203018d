"""How the fleet pages say things: ages, overdue units, health colours, report summaries."""

from __future__ import annotations

from appliance.fleet import view


def test_age() -> None:
    assert view.age(1000, None) == "never"
    assert view.age(1000, 988) == "12 s ago"
    assert view.age(1000, 1000 - 300) == "5 min ago"
    assert view.age(100_000, 100_000 - 3 * 3600) == "3 h ago"
    assert view.age(1_000_000, 1_000_000 - 2 * 86400) == "2 d ago"
    assert view.age(1000, 1100) == "in the future (clock?)"


def test_overdue_follows_the_requested_or_observed_interval() -> None:
    assert not view.overdue(1000, None, None, None)  # never reported: not overdue, just new
    assert not view.overdue(1000, 1000 - 170, None, None)  # default 60 s: 3 missed = 180
    assert view.overdue(1000, 1000 - 181, None, None)
    assert not view.overdue(1000, 1000 - 25, None, 10)
    assert view.overdue(1000, 1000 - 31, None, 10)
    assert not view.overdue(1000, 1000 - 500, 300, 10)  # asked for 300 s: 900 s allowed


def test_health_classes() -> None:
    assert view.health_class("ok") == "ok"
    assert view.health_class("fault") == "bad"
    assert view.health_class("pending-confirm") == "warn"
    assert view.health_class("something-new") == "info"
    assert view.health_class(None) == "none"


def test_revision_text() -> None:
    assert view.revision_text(None, None, None) == "-"
    assert view.revision_text(4, "pending", "ab" * 32) == "r4 pending abababababab"
    assert view.revision_text(None, None, "cd" * 32) == "r? cdcdcdcdcdcd"


def test_report_summary_is_tolerant() -> None:
    assert view.report_summary(None) == {}
    got = view.report_summary(
        {
            "links": [{"name": "it0", "role": "it", "up": True}, "junk"],
            "devices": {"total": 2, "ok": 1, "down": 1, "nested": {"x": 1}},
            "alarms": [{"severity": "critical", "message": "temp high"}, 5],
            "uptime_s": 7200,
        }
    )
    assert got["links"] == [{"name": "it0", "role": "it", "up": True}]
    assert got["devices"] == {"total": 2, "ok": 1, "down": 1}
    assert got["alarms"] == [{"severity": "critical", "message": "temp high"}]
    assert got["uptime"] == "2 h"
