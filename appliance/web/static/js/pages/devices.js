// Devices and their tags: live values with quality, refreshed every 2 s.

import { $, api, can, clear, fmtAgo, fmtValue, h, listOf, pill, poll, table } from "../lib.js";
import "../shell.js";
import { openWrite } from "../tagwrite.js";

let devices = [];
let tags = [];

async function load() {
  const [d, t] = await Promise.all([api("GET", "/api/devices"), api("GET", "/api/tags")]);
  devices = listOf(d, "devices");
  tags = listOf(t, "tags");
  render();
}

function quality(q) {
  return h("span", { class: `q-${q}` }, q === "good" ? "● good" : q === "uncertain" ? "◐ uncertain" : "○ bad");
}

function deviceFacts(d) {
  const bits = [];
  if (d.address) bits.push(h("code", null, d.address));
  if (d.poll_interval !== undefined) bits.push(`every ${d.poll_interval} s`);
  if (d.requests_per_cycle !== undefined) bits.push(`${d.requests_per_cycle} request${d.requests_per_cycle === 1 ? "" : "s"}/cycle (ideal ${d.ideal_requests ?? "?"})`);
  if (d.cycle_ms !== undefined && d.cycle_ms !== null) bits.push(`cycle ${Number(d.cycle_ms).toFixed(1)} ms`);
  if (d.polls !== undefined) bits.push(`${d.polls} polls`);
  if (d.error_count) bits.push(`${d.error_count} errors`);
  bits.push(`last good ${fmtAgo(d.last_ok)}`);
  return bits.flatMap((b, i) => (i ? [" · ", b] : [b]));
}

function render() {
  const f = $("#filter").value.trim().toLowerCase();
  const onlyBad = $("#only-bad").checked;
  const byDevice = new Map(devices.map((d) => [d.name, []]));
  for (const t of tags) {
    const dev = t.device || t.name.split(".")[0];
    if (!byDevice.has(dev)) byDevice.set(dev, []);
    byDevice.get(dev).push(t);
  }
  const panels = [];
  for (const [name, list] of byDevice) {
    const d = devices.find((x) => x.name === name) || { name };
    const shown = list.filter((t) => (!f || t.name.toLowerCase().includes(f) || (t.description || "").toLowerCase().includes(f)) && (!onlyBad || t.quality !== "good"));
    if ((f || onlyBad) && !shown.length) continue;
    panels.push(
      h(
        "section",
        { class: "panel", id: name, "data-device": name },
        h("h2", null, name, " ", pill(d.state || "off", d.state || "unknown"), h("span", { class: "small muted" }, d.protocol || ""), h("span", { class: "spacer" }), h("a", { href: `/devices/setup?device=${encodeURIComponent(name)}`, class: "small needs-admin" }, "Set up")),
        h("div", { class: "small muted" }, deviceFacts(d)),
        d.last_error ? h("div", { class: "alert bad small" }, d.last_error) : null,
        table(
          [
            { label: "tag", get: (t) => h("a", { href: `/tags/${encodeURIComponent(t.name)}` }, t.name.slice(name.length + 1) || t.name) },
            { label: "value", get: (t) => h("span", { class: "value", "data-value": t.name }, fmtValue(t.value), t.unit ? h("span", { class: "muted" }, ` ${t.unit}`) : ""), cls: "num" },
            { label: "quality", get: (t) => quality(t.quality) },
            { label: "updated", get: (t) => fmtAgo(t.source_time || t.poll_time), cls: "nowrap" },
            { label: "description", get: (t) => h("span", { class: "small" }, t.description || "") },
            { label: "", cls: "act", get: (t) => (t.writable ? h("button", { type: "button", class: "btn small needs-admin", onclick: () => openWrite(t, load) }, "Write") : "") },
          ],
          shown,
          { empty: "no tags", tableClass: "tag-table" },
        ),
      ),
    );
  }
  const none = can("admin")
    ? ["no field devices configured: add them on ", h("a", { href: "/devices/setup" }, "Device setup"), "."]
    : "no field devices configured (an admin adds them on Device setup)";
  clear($("#devices"), panels.length ? panels : h("div", { class: "panel muted", id: "no-devices" }, f || onlyBad ? "no tag matches" : none));
}

$("#filter").addEventListener("input", render);
$("#only-bad").addEventListener("change", render);
poll(load, 2000, $("#dev-error"));
