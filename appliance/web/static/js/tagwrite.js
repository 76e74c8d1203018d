// The "write a value to a device" dialog shared by the devices and tag pages (admin).

import { $, api, checkRequired, clearErrors, fmtValue, showErrors, toast } from "./lib.js";

export function parseValue(text, current) {
  const t = text.trim();
  if (typeof current === "boolean" || /^(true|false|on|off)$/i.test(t)) return /^(true|on|1)$/i.test(t);
  if (t !== "" && !Number.isNaN(Number(t))) return Number(t);
  return text;
}

export function openWrite(tag, after) {
  const dlg = $("#write-dialog");
  const form = $("#write-form");
  clearErrors(form);
  form.reset();
  $("#write-tag").textContent = tag.name;
  $("#write-current").textContent = `${fmtValue(tag.value)} ${tag.unit || ""}`;
  form.elements.value.value = tag.value === null || tag.value === undefined ? "" : String(tag.value);
  const submit = async (ev) => {
    ev.preventDefault();
    if (checkRequired(form)) return;
    try {
      const r = await api("POST", `/api/tags/${encodeURIComponent(tag.name)}/write`, { value: parseValue(form.elements.value.value, tag.value) });
      dlg.close();
      toast(`${tag.name} ← ${fmtValue(r?.value ?? form.elements.value.value)}`);
      if (after) after();
    } catch (e) {
      showErrors(form, e);
    }
  };
  form.onsubmit = submit;
  $("#write-cancel").onclick = () => dlg.close();
  dlg.showModal();
  form.elements.value.select();
}
