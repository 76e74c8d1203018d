// Events: drops, changes, drift, device faults, alarms, role restarts; filters and paging.

import { h, pill, timeEl } from "../lib.js";
import { logPage } from "../logpage.js";
import "../shell.js";

function details(e) {
  const data = e.data && typeof e.data === "object" ? e.data : {};
  const keys = Object.keys(data);
  if (!keys.length) return "";
  return h("details", { class: "small" }, h("summary", null, "data"), h("pre", { class: "mono" }, JSON.stringify(data, null, 2)));
}

logPage({
  endpoint: "/api/events",
  listKey: "events",
  filters: ["kind", "severity", "source"],
  columns: [
    { label: "time", get: (e) => timeEl(e.at), cls: "nowrap" },
    { label: "severity", get: (e) => pill(e.severity === "info" ? "info" : e.severity === "warning" || e.severity === "notice" ? "warn" : "bad", e.severity) },
    { label: "source", get: (e) => e.source },
    { label: "kind", get: (e) => h("code", null, e.kind) },
    { label: "message", get: (e) => h("span", null, e.message, details(e)) },
  ],
});
