// A small line chart in SVG for a tag's history: time axis, value axis with round ticks,
// bad/uncertain samples marked, gaps where there is no good value, a hover read-out.

import { fmtValue, s } from "./lib.js";

const W = 1000;
const H = 320;
const M = { l: 64, r: 16, t: 14, b: 30 };

export function niceTicks(lo, hi, count = 6) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (lo === hi) {
    const d = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    lo -= d;
    hi += d;
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) || 10 * mag;
  const out = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  if (out[0] > lo) out.unshift(Number((out[0] - step).toPrecision(12)));
  if (out[out.length - 1] < hi) out.push(Number((out[out.length - 1] + step).toPrecision(12)));
  return out;
}

function timeLabel(t, span) {
  const d = new Date(t * 1000);
  const p = (x) => String(x).padStart(2, "0");
  if (span > 2 * 86400) return `${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
  if (span > 600) return `${p(d.getHours())}:${p(d.getMinutes())}`;
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function numeric(v) {
  if (typeof v === "number") return v;
  if (typeof v === "boolean") return v ? 1 : 0;
  if (v === null || v === undefined || v === "") return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

// points: [{t, value, quality}] sorted by t; range: [t0, t1] (the asked window)
export function lineChart(points, { unit = "", range = null } = {}) {
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "history chart" });
  const pts = points.map((p) => ({ t: Number(p.t), v: numeric(p.value), q: p.quality || "good", raw: p.value })).filter((p) => Number.isFinite(p.t));
  const vals = pts.filter((p) => p.v !== null).map((p) => p.v);
  if (!pts.length || !vals.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, pts.length ? "no numeric values in this range" : "no samples in this range"));
    return svg;
  }
  const t0 = range ? Math.min(range[0], pts[0].t) : pts[0].t;
  const t1 = range ? Math.max(range[1], pts[pts.length - 1].t) : pts[pts.length - 1].t;
  const ticks = niceTicks(Math.min(...vals), Math.max(...vals));
  const v0 = ticks[0];
  const v1 = ticks[ticks.length - 1];
  const x = (t) => M.l + ((t - t0) / (t1 - t0 || 1)) * (W - M.l - M.r);
  const y = (v) => H - M.b - ((v - v0) / (v1 - v0 || 1)) * (H - M.t - M.b);
  for (const tv of ticks) {
    svg.append(s("line", { x1: M.l, x2: W - M.r, y1: y(tv), y2: y(tv), class: "gridline" }), s("text", { x: M.l - 6, y: y(tv) + 4, "text-anchor": "end" }, fmtValue(tv)));
  }
  const span = t1 - t0;
  for (let i = 0; i <= 6; i += 1) {
    const tt = t0 + (span * i) / 6;
    svg.append(s("text", { x: x(tt), y: H - 10, "text-anchor": i === 0 ? "start" : i === 6 ? "end" : "middle" }, timeLabel(tt, span)));
  }
  svg.append(s("line", { x1: M.l, x2: M.l, y1: M.t, y2: H - M.b, class: "axis" }), s("line", { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b, class: "axis" }));
  if (unit) svg.append(s("text", { x: 8, y: M.t + 4 }, unit));
  // the line, broken where a sample is bad or missing
  let d = "";
  let pen = false;
  for (const p of pts) {
    if (p.v === null || p.q === "bad") {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
    pen = true;
  }
  svg.append(s("path", { d, class: "series", "vector-effect": "non-scaling-stroke" }));
  for (const p of pts) {
    if (p.q === "good") continue;
    const cy = p.v === null ? H - M.b - 4 : y(p.v);
    svg.append(s("circle", { cx: x(p.t), cy, r: 3, class: p.q === "bad" ? "badpt" : "uncpt" }, s("title", null, `${p.q}: ${fmtValue(p.raw)}`)));
  }
  // hover read-out
  const cursor = s("line", { class: "cursor", y1: M.t, y2: H - M.b, visibility: "hidden" });
  const tipBg = s("rect", { class: "tip-bg", rx: 3, height: 20, visibility: "hidden" });
  const tip = s("text", { class: "tip", visibility: "hidden" });
  const hit = s("rect", { x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, fill: "transparent" });
  svg.append(cursor, tipBg, tip, hit);
  hit.addEventListener("mousemove", (ev) => {
    const box = svg.getBoundingClientRect();
    const px = ((ev.clientX - box.left) / box.width) * W;
    const t = t0 + ((px - M.l) / (W - M.l - M.r)) * (t1 - t0);
    let best = pts[0];
    for (const p of pts) if (Math.abs(p.t - t) < Math.abs(best.t - t)) best = p;
    const cx = x(best.t);
    cursor.setAttribute("x1", cx);
    cursor.setAttribute("x2", cx);
    const label = `${timeLabel(best.t, 0)}  ${fmtValue(best.raw)} ${unit}${best.q !== "good" ? ` (${best.q})` : ""}`;
    tip.textContent = label;
    const tw = label.length * 6.6 + 12;
    const tx = Math.min(cx + 8, W - M.r - tw);
    tip.setAttribute("x", tx + 6);
    tip.setAttribute("y", M.t + 15);
    tipBg.setAttribute("x", tx);
    tipBg.setAttribute("y", M.t + 1);
    tipBg.setAttribute("width", tw);
    for (const el of [cursor, tip, tipBg]) el.setAttribute("visibility", "visible");
  });
  hit.addEventListener("mouseleave", () => {
    for (const el of [cursor, tip, tipBg]) el.setAttribute("visibility", "hidden");
  });
  return svg;
}
