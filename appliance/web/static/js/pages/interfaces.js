// Interfaces section editor, with the links as the net role sees them now.

import { $, api, can, clear, clearErrors, fmtBytes, h, listOf, pill, poll, showErrors, table, toast } from "../lib.js";
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

// -- the unit's ports (GET /api/ports): every NIC, configured or not ----------------------

function carrier(p) {
  if (p.carrier === null || p.carrier === undefined) return pill("warn", p.admin_up ? "unknown" : "down");
  return p.carrier ? pill("ok", "cable") : pill("bad", "no cable");
}

function speed(p) {
  if (!p.speed) return "";
  return `${p.speed >= 1000 ? `${p.speed / 1000} G` : `${p.speed} M`}${p.duplex === "half" ? " half" : ""}`;
}

function configured(mac) {
  return editor.get().some((r) => (r.mac || "").toLowerCase() === (mac || "").toLowerCase());
}

function useAsInterface(p) {
  editor.add({ name: p.name, role: "it", mac: p.mac, addresses: [] });
  toast(`${p.name} (${p.mac}) added below: pick its role and addresses, then save.`);
  portList.now(); // the port is in the editor now: no second "Use as interface"
}

async function blink(p) {
  try {
    await api("POST", `/api/ports/${encodeURIComponent(p.name)}/identify`, { seconds: 15 });
    toast(`${p.name}: its link LED blinks for 15 s.`);
  } catch (e) {
    toast(`${p.name}: ${e.message}`, "bad", 8000);
  }
}

const portList = poll(
  async () => {
    let data;
    try {
      data = await api("GET", "/api/ports");
    } catch (e) {
      if (e.status !== 503) throw e;
      clear($("#ports"), h("p", { class: "muted" }, "The net role is not running: no port list."));
      return;
    }
    const ports = data.ports || [];
    clear(
      $("#ports"),
      table(
        [
          { label: "port", get: (p) => h("span", null, h("strong", null, p.name), p.label ? ` (${p.label})` : "") },
          { label: "MAC", get: (p) => h("code", null, p.mac || "") },
          { label: "cable", get: carrier },
          { label: "speed", get: speed },
          { label: "driver", get: (p) => p.driver || (p.kind ? `(${p.kind})` : "") },
          { label: "PCI path", get: (p) => h("code", null, p.pci_path || "") },
          { label: "in use as", get: (p) => (p.role ? `${p.role} (${p.interface})` : "—") },
          { label: "rx / tx", get: (p) => `${fmtBytes(p.counters?.rx_bytes || 0)} / ${fmtBytes(p.counters?.tx_bytes || 0)}` },
          {
            label: "",
            get: (p) =>
              h(
                "span",
                { class: "row-actions" },
                can("admin") && !p.role && p.mac && !configured(p.mac)
                  ? h("button", { type: "button", class: "btn small use-port", onclick: () => useAsInterface(p) }, "Use as interface")
                  : "",
                can("operator")
                  ? h("button", { type: "button", class: "btn small blink-port", onclick: () => blink(p) }, "Blink")
                  : "",
              ),
          },
        ],
        ports,
        { empty: "the net role sees no NIC besides loopback", rowAttrs: (p) => ({ "data-port": p.name }) },
      ),
    );
  },
  5000,
  $("#ports-error"),
);

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

