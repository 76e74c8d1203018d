// Audit log: who did what, from where, with what result; filters and paging.

import { h, pill, timeEl } from "../lib.js";
import { logPage } from "../logpage.js";
import "../shell.js";

logPage({
  endpoint: "/api/audit",
  listKey: "audit",
  filters: ["actor", "action"],
  columns: [
    { label: "time", get: (a) => timeEl(a.at), cls: "nowrap" },
    { label: "actor", get: (a) => h("strong", null, a.actor) },
    { label: "from", get: (a) => h("code", null, a.source || "") },
    { label: "action", get: (a) => h("code", null, a.action) },
    { label: "target", get: (a) => a.target || "" },
    { label: "result", get: (a) => pill(a.result === "ok" ? "ok" : "bad", a.result) },
    { label: "detail", get: (a) => h("span", { class: "small" }, a.detail || "") },
  ],
});
