// Alarms: active (or all recent) limit and communication alarms; operators acknowledge.
// The counts are the header's (the same /api/status answer, alarmSummary): the page and the
// header's alarm indicator never disagree; the unit's own health is a separate line.

import { $, alarmSummary, api, clear, fmtAgo, fmtTime, fmtValue, h, headerHealth, listOf, pill, poll, table, toast } from "../lib.js";
import { onStatus, refreshStatus, setStatusInterval } from "../shell.js";

function paintCounts(st) {
  const counts = alarmSummary(st.alarms);
  clear(
    $("#alarm-counts"),
    [
      ["active", counts.active, counts.critical ? "bad" : "warn"],
      ["critical", counts.critical, "bad"],
      ["warning", counts.warning, "warn"],
      ["not acknowledged", counts.unacked, "pending"],
    ].map(([k, v, cls]) => h("div", { class: "stat", "data-count": k }, h("div", { class: "k" }, k), h("div", { class: "v" }, v ? pill(cls, String(v)) : "0"))),
  );
  const unit = headerHealth(st.health, st.revision);
  clear($("#unit-note"), "The unit itself: ", pill(unit.state, unit.state || "unknown"), " (its health counts links, ruleset, roles, polling, disk, clock and certificate, not the plant's process alarms).");
}

const activeOnly = $("#active-only");

async function load() {
  const data = await api("GET", `/api/alarms${activeOnly.checked ? "?active=1" : "?limit=500"}`);
  const alarms = listOf(data, "alarms", "active");
  clear(
    $("#alarm-table"),
    table(
      [
        { label: "severity", get: (a) => pill(a.severity === "critical" ? "bad" : "warn", a.severity) },
        { label: "state", get: (a) => pill(a.state === "active" ? "bad" : "off", a.state) },
        { label: "source", get: (a) => (a.tag ? h("a", { href: `/tags/${encodeURIComponent(a.tag)}` }, a.tag) : h("a", { href: `/devices#${encodeURIComponent(a.device)}` }, a.device)) },
        { label: "kind", get: (a) => a.kind },
        { label: "message", get: (a) => a.message || "" },
        { label: "value / limit", get: (a) => (a.limit !== null && a.limit !== undefined ? `${fmtValue(a.value)} / ${fmtValue(a.limit)}` : fmtValue(a.value)), cls: "num" },
        { label: "raised", get: (a) => h("span", { title: fmtTime(a.raised_at) }, fmtAgo(a.raised_at)), cls: "nowrap" },
        { label: "cleared", get: (a) => (a.cleared_at ? fmtTime(a.cleared_at) : "–"), cls: "nowrap" },
        {
          label: "acknowledged",
          cls: "act",
          get: (a) =>
            a.acked
              ? h("span", { class: "small", title: fmtTime(a.acked_at) }, `by ${a.acked_by || "?"} ${fmtAgo(a.acked_at)}`)
              : h("button", { type: "button", class: "btn small primary needs-operator", "data-ack": String(a.id), onclick: (ev) => ack(a, ev.target) }, "Acknowledge"),
        },
      ],
      alarms,
      { empty: activeOnly.checked ? "no active alarms" : "no alarms", rowAttrs: (a) => ({ "data-alarm": a.key || String(a.id), class: a.state !== "active" ? "inactive" : "" }) },
    ),
  );
}

async function ack(a, button) {
  button.disabled = true;
  try {
    await api("POST", `/api/alarms/${a.id}/ack`, {});
    toast(`Acknowledged ${a.key || a.id}.`);
  } catch (e) {
    toast(`Acknowledge failed: ${e.message}`, "bad", 8000);
    button.disabled = false;
  }
  p.now();
  refreshStatus();
}

const p = poll(load, 2000, $("#alarm-error"));
onStatus(paintCounts);
setStatusInterval(2000);
activeOnly.addEventListener("change", () => p.now());
