// Overview: the picture of the demarcation point and the unit's state, refreshed from
// /api/status every 2 s without reloading the page.

import { $, api, clear, fmtAgo, fmtDuration, fmtTime, h, headerHealth, pill, table, toast } from "../lib.js";
import { LIST_BELOW, draw, drawList } from "../picture.js";
import { onStatus, refreshStatus, setStatusInterval } from "../shell.js";

let prev = null;

// The drawing where there is room for readable text, the list where there is not.
function render(st) {
  const narrow = $("#picture").clientWidth < LIST_BELOW;
  clear($("#picture"), narrow ? drawList(st, prev) : draw(st, prev));
  prev = st;
  $("#updated").textContent = `updated ${fmtTime(Date.now() / 1000)}`;
  const rev = st.revision || {};
  $("#ov-rev").textContent = rev.id ? `revision ${rev.id} (${rev.state})${rev.sha256 ? ` · ${String(rev.sha256).slice(0, 12)}` : ""}` : "no configuration yet: fail-closed";
  const pending = rev.state === "pending" && (rev.confirm_deadline || rev.seconds_left !== undefined);
  $("#pending-panel").hidden = !pending;
  if (pending) $("#ov-pending-rev").textContent = String(rev.id);
  renderHealth(st);
  renderAlarms(st.alarms || {});
  renderDevices(st.devices || []);
  renderDenied(st.denied || []);
}

function renderHealth(st) {
  const health = headerHealth(st.health, st.revision); // the unit's own, as the header says
  clear($("#ov-health"), pill(health.state, health.state || "unknown"));
  const reasons = health.reasons || [];
  clear(
    $("#ov-reasons"),
    reasons.length
      ? reasons.map((r) => (typeof r === "string" ? h("li", null, r) : h("li", null, pill(r.severity === "fault" ? "bad" : r.severity === "warning" ? "warn" : "info", r.severity), " ", r.message)))
      : h("li", { class: "muted" }, "no findings"),
  );
  const facts = [
    ["version", st.version],
    ["uptime", st.uptime_s !== undefined ? fmtDuration(st.uptime_s) : "–"],
    ["certificate", st.cert_fingerprint ? h("code", { class: "small" }, st.cert_fingerprint) : "–"],
  ];
  if (st.roles) {
    facts.push(["roles", h("span", null, Object.entries(st.roles).map(([r, up]) => [pill(up ? "ok" : "bad", r), " "]))]);
  }
  if (st.identify_until && st.identify_until * 1000 > Date.now()) facts.push(["identify", `LEDs blinking until ${fmtTime(st.identify_until)}`]);
  clear($("#ov-facts"), facts.flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v ?? "–")]));
}

function renderAlarms(alarms) {
  const active = alarms.active || [];
  clear(
    $("#ov-alarms"),
    table(
      [
        { label: "severity", get: (a) => pill(a.severity === "critical" ? "bad" : "warn", a.severity) },
        { label: "alarm", get: (a) => h("span", null, h("strong", null, a.tag || a.device), " ", a.message || a.kind) },
        { label: "since", get: (a) => fmtAgo(a.raised_at), cls: "nowrap" },
        {
          label: "",
          cls: "act",
          get: (a) => (a.acked ? h("span", { class: "muted small" }, `acked by ${a.acked_by || "?"}`) : h("button", { type: "button", class: "btn small needs-operator", "data-ack": a.id, onclick: (ev) => ack(a, ev.target) }, "Acknowledge")),
        },
      ],
      active,
      { empty: "no active alarms" },
    ),
  );
}

async function ack(alarm, button) {
  button.disabled = true;
  try {
    await api("POST", `/api/alarms/${alarm.id}/ack`, {});
    toast(`Alarm ${alarm.key || alarm.id} acknowledged.`);
  } catch (e) {
    toast(`Acknowledge failed: ${e.message}`, "bad");
  }
  refreshStatus();
}

function renderDevices(devices) {
  clear(
    $("#ov-devices"),
    table(
      [
        { label: "device", get: (d) => h("a", { href: `/devices#${encodeURIComponent(d.name)}` }, d.name) },
        { label: "protocol", get: (d) => d.protocol || "", cls: "nowrap" },
        { label: "state", get: (d) => pill(d.state) },
        { label: "last good", get: (d) => fmtAgo(d.last_ok), cls: "nowrap" },
        { label: "last error", get: (d) => h("span", { class: "small" }, d.last_error || "") },
      ],
      devices,
      { empty: "no device reports (no devices configured, or the field role is not running)" },
    ),
  );
}

function renderDenied(denied) {
  clear(
    $("#ov-denied"),
    table(
      [
        { label: "from", get: (d) => h("code", null, d.src) },
        { label: "to", get: (d) => h("code", null, d.dst) },
        { label: "service", get: (d) => `${d.proto || ""}${d.port ? `/${d.port}` : ""}` },
        { label: "packets", get: (d) => String(d.packets ?? ""), cls: "num" },
      ],
      denied.slice(0, 10),
      { empty: "nothing denied recently" },
    ),
  );
}

onStatus(render);
let width = null;
new ResizeObserver(() => {
  const narrow = $("#picture").clientWidth < LIST_BELOW;
  if (narrow !== width && prev) render(prev);
  width = narrow;
}).observe($("#picture"));
setStatusInterval(2000);
