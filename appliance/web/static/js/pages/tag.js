// One tag: its live value, a history chart drawn here (no chart library), CSV download.

import { $, api, clear, fmtTime, fmtValue, h, listOf, poll } from "../lib.js";
import { lineChart } from "../chart.js";
import "../shell.js";
import { openWrite } from "../tagwrite.js";

const name = $("#tag-root").dataset.tag;
const enc = encodeURIComponent(name);
let range = Number(sessionStorage.getItem("tag-range") || 3600);
let current = null;

function paintRangeButtons() {
  for (const b of document.querySelectorAll("[data-range]")) b.classList.toggle("primary", Number(b.dataset.range) === range);
  const now = Date.now() / 1000;
  $("#csv-link").href = `/api/tags/${enc}/history?from=${(now - range).toFixed(0)}&to=${now.toFixed(0)}&format=csv&limit=100000`;
  $("#csv-link").setAttribute("download", `${name}.csv`);
}

async function loadLive() {
  const tags = listOf(await api("GET", "/api/tags"), "tags");
  current = tags.find((t) => t.name === name) || null;
  if (!current) {
    $("#tag-value").textContent = "unknown tag";
    return;
  }
  $("#tag-value").textContent = `${fmtValue(current.value)}${current.unit ? ` ${current.unit}` : ""}`;
  const q = current.quality || "bad";
  clear($("#tag-quality"), h("span", { class: `q-${q}` }, q));
  $("#tag-device").textContent = current.device || name.split(".")[0];
  $("#tag-device").href = `/devices#${encodeURIComponent(current.device || name.split(".")[0])}`;
  $("#tag-time").textContent = fmtTime(current.source_time || current.poll_time);
  $("#tag-desc").textContent = current.description || "–";
  $("#write-btn").hidden = !current.writable;
}

async function loadHistory() {
  const now = Date.now() / 1000;
  const from = now - range;
  const data = await api("GET", `/api/tags/${enc}/history?from=${from.toFixed(3)}&to=${now.toFixed(3)}&limit=5000`);
  const points = listOf(data, "samples", "history", "points");
  // a window longer than the stored history starts where the history starts
  const first = points.length ? Number(points[0].t) : null;
  const start = first !== null && first > from ? first : from;
  clear($("#chart"), lineChart(points, { unit: current?.unit || "", range: [start, now] }));
  const since = start > from ? ` History starts at ${fmtTime(start)}.` : "";
  $("#chart-note").textContent = `${points.length} stored samples${points.length >= 5000 ? " (the newest 5000; download CSV for all)" : ""}.${since} Values are stored on change (deadband) or every poll, as configured.`;
}

for (const b of document.querySelectorAll("[data-range]")) {
  b.addEventListener("click", () => {
    range = Number(b.dataset.range);
    sessionStorage.setItem("tag-range", String(range));
    paintRangeButtons();
    hist.now();
  });
}
$("#write-btn").addEventListener("click", () => current && openWrite(current, loadLive));
paintRangeButtons();
poll(loadLive, 2000, $("#tag-error"));
const hist = poll(async () => {
  paintRangeButtons();
  await loadHistory();
}, 5000, $("#tag-error"));
