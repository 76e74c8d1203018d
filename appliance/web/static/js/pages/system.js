// System: version, uptime, disk, certificate, fleet and syslog status, history capacity,
// identify (operator) and the diagnostics bundle (admin).

import { $, api, clear, fmtAgo, fmtBytes, fmtDuration, fmtTime, h, pill, poll, table, toast } from "../lib.js";
import "../shell.js";

function kv(el, pairs) {
  clear(el, pairs.flatMap(([k, v]) => [h("dt", null, k), h("dd", { "data-key": k }, v === undefined || v === null || v === "" ? "–" : v)]));
}

async function load() {
  const s = await api("GET", "/api/system");
  kv($("#sys-unit"), [
    ["version", s.version],
    ["uptime", s.uptime_s !== undefined ? fmtDuration(s.uptime_s) : "–"],
    ["certificate", s.cert_fingerprint ? h("code", { class: "small" }, s.cert_fingerprint) : "not created yet"],
    ["certificate valid until", s.cert_not_after ? fmtTime(s.cert_not_after) : undefined],
    ["identify", s.identify_until && s.identify_until * 1000 > Date.now() ? `until ${fmtTime(s.identify_until)}` : "off"],
  ]);
  const disk = s.disk || {};
  const cap = s.history || s.history_capacity || {};
  const used = disk.total ? 1 - disk.free / disk.total : null;
  kv($("#sys-disk"), [
    ["data partition", disk.total ? `${fmtBytes(disk.free)} free of ${fmtBytes(disk.total)}` : "–"],
    ["used", used === null ? "–" : pill(used > 0.98 ? "bad" : used > 0.9 ? "warn" : "ok", `${(used * 100).toFixed(1)} %`)],
    ["bytes per sample", cap.bytes_per_sample !== undefined && cap.bytes_per_sample !== null ? Number(cap.bytes_per_sample).toFixed(1) : undefined],
    ["samples per hour", cap.samples_per_hour !== undefined && cap.samples_per_hour !== null ? Math.round(cap.samples_per_hour).toLocaleString() : undefined],
    ["history fits", cap.hours_left !== undefined && cap.hours_left !== null ? (cap.hours_left === Infinity || cap.hours_left > 1e6 ? "no limit at this rate" : fmtDuration(cap.hours_left * 3600)) : undefined],
  ]);
  const fleet = s.fleet || {};
  const fl = fleet.fleet || fleet;
  kv($("#sys-fleet"), [
    ["receiver", fl.url ? h("code", null, fl.url) : "not configured"],
    ["last success", fl.url ? fmtAgo(fl.last_ok) : undefined],
    ["last error", fl.last_error ? h("span", { class: "q-bad" }, fl.last_error) : undefined],
    ["interval", fl.interval ? `${fl.interval} s` : undefined],
    ["waiting in outbox", fl.outbox !== undefined ? String(fl.outbox) : undefined],
    ["dropped (outbox full)", fl.dropped ? String(fl.dropped) : undefined],
  ]);
  const syslog = Array.isArray(s.syslog) ? s.syslog : [];
  clear(
    $("#sys-syslog"),
    table(
      [
        { label: "target", get: (t) => h("code", null, t.target) },
        { label: "sent", get: (t) => String(t.sent ?? 0), cls: "num" },
        { label: "last success", get: (t) => fmtAgo(t.last_ok), cls: "nowrap" },
        { label: "last error", get: (t) => (t.last_error ? h("span", { class: "q-bad small" }, t.last_error) : "–") },
      ],
      syslog,
      { empty: "no syslog targets configured" },
    ),
  );
}

$("#identify").addEventListener("click", async (ev) => {
  ev.target.disabled = true;
  try {
    const r = await api("POST", "/api/identify", { seconds: 30 });
    toast(`The unit's LEDs blink until ${fmtTime(r?.until)}.`);
  } catch (e) {
    toast(`Identify failed: ${e.message}`, "bad", 8000);
  } finally {
    ev.target.disabled = false;
    p.now();
  }
});

const p = poll(load, 5000, $("#sys-error"));
