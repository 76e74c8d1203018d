// NAT section editor: 1:1 addresses, port forwards, masquerade (into the draft).

import { $, can, clearErrors, showErrors, toast } from "../lib.js";
import { rowEditor } from "../rows.js";
import { loadSection, saveSection } from "../section.js";
import { sessionReady } from "../shell.js";

const form = $("#nat-form");
const oneToOne = rowEditor($("#one-to-one"), {
  prefix: "one_to_one",
  empty: "no 1:1 addresses",
  addLabel: "Add 1:1 address",
  columns: [
    { key: "it_address", label: "IT address", placeholder: "e.g. 10.10.0.50" },
    { key: "ot_address", label: "OT address", placeholder: "e.g. 192.168.50.10" },
    { key: "description", label: "description", optional: true },
  ],
});
const forwards = rowEditor($("#port-forwards"), {
  prefix: "port_forwards",
  empty: "no port forwards",
  addLabel: "Add port forward",
  columns: [
    { key: "name", label: "name", placeholder: "e.g. plc1-web" },
    { key: "protocol", label: "protocol", type: "select", options: ["tcp", "udp"] },
    { key: "port", label: "IT port", type: "number", placeholder: "e.g. 8081" },
    { key: "to_address", label: "to OT address", placeholder: "e.g. 192.168.50.10" },
    { key: "to_port", label: "to port", type: "number", optional: true, placeholder: "empty: the same port" },
    { key: "description", label: "description", optional: true },
  ],
});

let original = {};

async function load() {
  clearErrors(form);
  const { value, source, revision } = await loadSection("nat");
  original = value || {};
  oneToOne.set(original.one_to_one || []);
  forwards.set(original.port_forwards || []);
  form.elements.masquerade.checked = !!original.masquerade;
  $("#source-note").textContent = source === "draft" ? `Editing the draft (revision ${revision ?? "?"}).` : source === "running" ? "No draft yet: showing the running configuration; saving creates a draft." : "No configuration yet.";
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  clearErrors(form);
  const body = { ...original, one_to_one: oneToOne.get(), port_forwards: forwards.get(), masquerade: form.elements.masquerade.checked };
  $("#save").disabled = true;
  try {
    const r = await saveSection("nat", body);
    for (const w of r?.warnings || []) toast(`warning: ${w}`, "bad", 8000);
    toast("NAT saved to the draft.");
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
