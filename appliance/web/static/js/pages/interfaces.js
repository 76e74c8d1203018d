// Interfaces section editor, with the links as the net role sees them now.

import { $, can, clear, clearErrors, h, listOf, pill, showErrors, table, toast } from "../lib.js";
import { rowEditor } from "../rows.js";
import { loadSection, saveSection } from "../section.js";
import { onStatus, sessionReady } from "../shell.js";

const form = $("#if-form");
const editor = rowEditor($("#if-rows"), {
  prefix: "interfaces",
  empty: "no interfaces",
  addLabel: "Add interface",
  columns: [
    { key: "name", label: "name", placeholder: "e.g. it0" },
    { key: "role", label: "role", type: "select", options: ["it", "ot", "mgmt"] },
    { key: "mac", label: "MAC", optional: true, placeholder: "e.g. 02:a0:00:00:01:01" },
    { key: "addresses", label: "addresses", type: "list", placeholder: "e.g. 10.10.0.1/24" },
    { key: "gateway", label: "gateway", optional: true },
    { key: "mtu", label: "MTU", type: "number", optional: true },
    { key: "allow_in", label: "allow in", type: "list", optional: true, placeholder: "empty: the role's default" },
    { key: "description", label: "description", optional: true },
  ],
});

function up(l) {
  if (typeof l.up === "boolean") return l.up && l.present !== false;
  return String(l.oper || l.state || "").toUpperCase() === "UP";
}

onStatus((st) => {
  const links = listOf(st.links, "links");
  clear(
    $("#links-now"),
    table(
      [
        { label: "name", get: (l) => h("strong", null, l.name) },
        { label: "role", get: (l) => l.role },
        { label: "state", get: (l) => (l.present === false ? pill("bad", "absent") : pill(up(l) ? "ok" : "bad", up(l) ? "up" : "down")) },
        { label: "MAC", get: (l) => h("code", null, l.mac || "") },
        { label: "addresses", get: (l) => h("code", null, (l.addresses || []).join(" ")) },
      ],
      links,
      { empty: "the net role reports no links" },
    ),
  );
});

async function load() {
  clearErrors(form);
  const { value, source } = await loadSection("interfaces");
  editor.set(value || []);
  $("#source-name").textContent = source === "draft" ? "draft" : source === "running" ? "running configuration (saving creates a draft)" : "configuration (none yet)";
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  clearErrors(form);
  $("#save").disabled = true;
  try {
    const r = await saveSection("interfaces", editor.get());
    for (const w of r?.warnings || []) toast(`warning: ${w}`, "bad", 8000);
    toast("Interfaces saved to the draft.");
    await load();
  } catch (e) {
    showErrors(form, e);
  } finally {
    $("#save").disabled = false;
  }
});
$("#reload").addEventListener("click", () => load().catch((e) => showErrors(form, e)));
load().catch((e) => showErrors(form, e));
sessionReady.then(() => {
  $("#editable").disabled = !can("admin");
});

