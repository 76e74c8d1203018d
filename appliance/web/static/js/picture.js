// The overview picture: IT network | appliance | OT network, one horizontal lane per
// conduit crossing the appliance (with its live counters), the NICs on the appliance's
// edges with their link state, drops at the bottom, the devices the appliance polls.
// layout() is pure (status -> geometry); draw() turns the geometry into SVG. Below
// LIST_BELOW pixels of width the drawing's text would shrink past reading (a phone):
// drawList() says the same as a list, with the same data-counter/data-conduit hooks.

import { fmtBytes, fmtCount, h, hostList, pill, s, stateClass, unitHealth } from "./lib.js";

export const LIST_BELOW = 760; // px of the picture's box: 12 px text at 760/1100 is 8 px

const W = 1100;
const IT = { x: 12, w: 270 };
const APP = { x: 380, w: 340 };
const OT = { x: 818, w: 270 };
const TOP = 78; // top of the lane area
const LANE = 36;
const NODE_H = 26;
const MAX_LANES = 40;

const COLORS = { ok: "#1f8a43", warn: "#b77900", bad: "#c8312a", pending: "#2463c9", off: "#8a94a0", info: "#5b6b7c" };

function key(list) {
  return hostList(list).join(", ") || "?";
}

function linkUp(link) {
  if (typeof link.up === "boolean") return link.up && link.present !== false;
  return String(link.oper || link.state || "").toUpperCase() === "UP";
}

// Place nodes next to the mean height of their lanes, without overlapping.
function placeNodes(groups, minY) {
  const out = [];
  let next = minY;
  for (const g of groups) {
    const want = g.lanes.reduce((a, l) => a + l.y, 0) / g.lanes.length - NODE_H / 2;
    const y = Math.max(want, next);
    out.push({ ...g, y });
    next = y + NODE_H + 8;
  }
  return out;
}

export function layout(st) {
  const all = st.conduits || [];
  const conduits = all.slice(0, MAX_LANES);
  const lanes = conduits.map((c, i) => ({ conduit: c, y: TOP + 44 + i * LANE }));
  const group = (side) => {
    const m = new Map();
    for (const l of lanes) {
      const k = key(side === "it" ? l.conduit.from : l.conduit.to);
      if (!m.has(k)) m.set(k, { label: k, lanes: [] });
      m.get(k).lanes.push(l);
    }
    return [...m.values()];
  };
  const itNodes = placeNodes(group("it"), TOP + 8);
  const otNodes = placeNodes(group("ot"), TOP + 8);
  const laneBottom = lanes.length ? lanes[lanes.length - 1].y + 24 : TOP + 40;
  const otBottom = otNodes.length ? otNodes[otNodes.length - 1].y + NODE_H : TOP;
  const devices = (st.devices || []).map((d, i) => ({ device: d, y: Math.max(laneBottom, otBottom + 26) + 22 + i * 24 }));
  const devBottom = devices.length ? devices[devices.length - 1].y + 16 : laneBottom;
  const dropsY = Math.max(laneBottom + 14, TOP + 60);
  const appBottom = Math.max(dropsY + 56, devBottom + 10);
  const links = st.links || [];
  return {
    width: W,
    height: appBottom + 44,
    lanes,
    more: all.length - conduits.length,
    itNodes,
    otNodes,
    devices,
    dropsY,
    appBottom,
    itLinks: links.filter((l) => l.role === "it"),
    otLinks: links.filter((l) => l.role === "ot"),
    mgmtLinks: links.filter((l) => l.role === "mgmt"),
  };
}

function dropTotals(drops) {
  // {"drop_it_ot": {packets, bytes}, ...} or {"it_ot": n, ...}
  const out = {};
  for (const [k, v] of Object.entries(drops || {})) {
    const name = k.replace(/^drop_/, "");
    out[name] = typeof v === "object" && v ? Number(v.packets || 0) : Number(v || 0);
  }
  return out;
}

function portLabel(link) {
  const addr = (link.addresses || [])[0] || "";
  return `${link.name} ${addr}`.trim();
}

function port(x, y, link, anchor) {
  const up = linkUp(link);
  const fill = up ? COLORS.ok : COLORS.bad;
  const tx = anchor === "end" ? x - 10 : x + 10;
  return s(
    "g",
    { class: "port" },
    s("title", null, `${link.name} (${link.role}): ${up ? "link up" : "link DOWN"} ${(link.addresses || []).join(" ")} ${link.mac || ""}`),
    s("rect", { x: x - 6, y: y - 6, width: 12, height: 12, rx: 2, fill, stroke: "#fff", "stroke-width": 1.5 }),
    s("text", { x: tx, y: y + 4, "text-anchor": anchor, class: "mono" }, portLabel(link)),
    s("text", { x: tx, y: y + 17, "text-anchor": anchor, class: "small" }, up ? "up" : "DOWN"),
  );
}

function node(x, y, w, label, side) {
  const color = side === "it" ? "#2d6cb5" : "#a35a12";
  const text = label.length > 34 ? `${label.slice(0, 33)}…` : label;
  return s(
    "g",
    { class: `node ${side}` },
    s("title", null, label),
    s("rect", { x, y, width: w, height: NODE_H, rx: 4, fill: "#fff", stroke: color, "stroke-width": 1.2 }),
    s("text", { x: x + 8, y: y + 17, class: "mono" }, text),
  );
}

// prev: the previous status (for "packets are flowing" animation)
export function draw(st, prev) {
  const g = layout(st);
  const prevPk = new Map((prev?.conduits || []).map((c) => [c.name, Number(c.packets || 0)]));
  const svg = s("svg", {
    class: "overview-svg",
    viewBox: `0 0 ${g.width} ${g.height}`,
    role: "img",
    "aria-label": "IT network, the appliance and the OT network with conduits, links and devices",
  });
  const unitName = st.unit?.name || "appliance";
  // zones
  svg.append(
    s("rect", { x: IT.x, y: 8, width: IT.w, height: g.height - 16, rx: 6, fill: "#eef4fb", stroke: "#c9d9ee" }),
    s("text", { x: IT.x + 12, y: 30, class: "zone-label zone-it" }, "IT NETWORK"),
    s("text", { x: IT.x + 12, y: 47, class: "small" }, g.itLinks.flatMap((l) => l.addresses || []).join("  ") || "plant network"),
    s("rect", { x: OT.x, y: 8, width: OT.w, height: g.height - 16, rx: 6, fill: "#fbf3ea", stroke: "#ecd5ba" }),
    s("text", { x: OT.x + 12, y: 30, class: "zone-label zone-ot" }, "OT NETWORK"),
    s("text", { x: OT.x + 12, y: 47, class: "small" }, g.otLinks.flatMap((l) => l.addresses || []).join("  ") || "production network"),
  );
  // appliance
  const health = stateClass(unitHealth(st.health).state);
  svg.append(
    s("rect", { x: APP.x, y: 40, width: APP.w, height: g.appBottom - 40, rx: 8, fill: "#fff", stroke: "#16202c", "stroke-width": 2 }),
    s("rect", { x: APP.x, y: 40, width: APP.w, height: 28, rx: 8, fill: "#16202c" }),
    s("rect", { x: APP.x, y: 56, width: APP.w, height: 12, fill: "#16202c" }),
    s("circle", { cx: APP.x + 16, cy: 54, r: 6, fill: COLORS[health] || COLORS.off }, s("title", null, `health: ${unitHealth(st.health).state || "unknown"}`)),
    s("text", { x: APP.x + 28, y: 58, class: "app-title" }, `${unitName} · default deny`),
  );
  // ports on the edges
  g.itLinks.forEach((l, i) => svg.append(port(APP.x, TOP + 2 + i * 30 - 2, l, "end")));
  g.otLinks.forEach((l, i) => svg.append(port(APP.x + APP.w, TOP + 2 + i * 30 - 2, l, "start")));
  g.mgmtLinks.forEach((l, i) => {
    const x = APP.x + 30 + i * 150;
    const y = g.appBottom;
    const up = linkUp(l);
    svg.append(
      s(
        "g",
        null,
        s("title", null, `${l.name} (mgmt): ${up ? "up" : "DOWN"} ${(l.addresses || []).join(" ")}`),
        s("rect", { x: x - 6, y: y - 6, width: 12, height: 12, rx: 2, fill: up ? COLORS.ok : COLORS.bad, stroke: "#fff" }),
        s("text", { x: x + 10, y: y + 18, class: "mono" }, `${portLabel(l)} (mgmt) ${up ? "up" : "DOWN"}`),
      ),
    );
  });
  // conduit lanes
  const itIdx = new Map(g.itNodes.map((n) => [n.label, n]));
  const otIdx = new Map(g.otNodes.map((n) => [n.label, n]));
  for (const n of g.itNodes) svg.append(node(IT.x + 14, n.y, IT.w - 42, n.label, "it"));
  for (const n of g.otNodes) svg.append(node(OT.x + 28, n.y, OT.w - 42, n.label, "ot"));
  for (const lane of g.lanes) {
    const c = lane.conduit;
    const active = c.active !== false && c.enabled !== false;
    const pk = Number(c.packets || 0);
    // packets that count but are never answered are not a healthy conduit (net role: conntrack)
    const silent = active && c.answering === false;
    const flowing = active && !silent && prevPk.has(c.name) && pk > prevPk.get(c.name);
    const cls = `lane ${silent ? "silent" : active ? (pk > 0 ? "active" : "idle") : "inactive"}${flowing ? " flowing" : ""}`;
    const a = itIdx.get(key(c.from));
    const b = otIdx.get(key(c.to));
    const x0 = IT.x + IT.w - 28;
    const y0 = a.y + NODE_H / 2;
    const x3 = OT.x + 28;
    const y3 = b.y + NODE_H / 2;
    const y = lane.y;
    const d = `M${x0},${y0} C${x0 + 60},${y0} ${APP.x - 60},${y} ${APP.x},${y} L${APP.x + APP.w},${y} C${APP.x + APP.w + 60},${y} ${x3 - 60},${y3} ${x3},${y3}`;
    const services = (c.services || []).join(" ");
    const title = `${c.name}: ${key(c.from)} → ${key(c.to)} ${services}\nowner ${c.owner || "?"}\n${c.reason || ""}${c.expires ? `\nexpires ${c.expires}` : ""}\n${pk} packets, ${fmtBytes(c.bytes)}${active ? "" : "\n(not passing: disabled or expired)"}${silent ? "\nthe destination does not answer" : ""}`;
    svg.append(
      s(
        "a",
        { href: `/conduits#${encodeURIComponent(c.name)}`, class: "lane-link", "data-conduit": c.name },
        s("title", null, title),
        s("path", { d, class: cls }),
        s("path", { d, class: "lane-hit" }),
        s("text", { x: APP.x + 12, y: y - 6, class: "lane-name" }, c.name.length > 24 ? `${c.name.slice(0, 23)}…` : c.name),
        s("text", { x: APP.x + APP.w - 12, y: y - 6, "text-anchor": "end", class: "counter", "data-counter": c.name }, `${fmtCount(pk)} pkts · ${fmtBytes(c.bytes)}`),
        s("text", { x: APP.x + 12, y: y + 13, class: "small" }, `${services}${active ? "" : " · not passing"}${silent ? " · not answering" : ""}`),
      ),
    );
  }
  if (!g.lanes.length) {
    svg.append(s("text", { x: APP.x + APP.w / 2, y: TOP + 30, "text-anchor": "middle", class: "small" }, "no conduits: nothing crosses"));
  }
  if (g.more > 0) {
    svg.append(s("a", { href: "/conduits" }, s("text", { x: APP.x + 12, y: g.lanes[g.lanes.length - 1].y + 30 }, `+ ${g.more} more conduits`)));
  }
  // drops: what no conduit allowed between the sides; the rest (to the unit itself,
  // other interfaces) is summed and shown in the tooltip
  const drops = dropTotals(st.drops);
  let itOt = 0;
  let otIt = 0;
  let other = 0;
  for (const [k, v] of Object.entries(drops)) {
    if (k === "it_ot") itOt += v;
    else if (k === "ot_it") otIt += v;
    else other += v;
  }
  const detail = Object.entries(drops).map(([k, v]) => `${k}: ${v}`).join("\n");
  const y = g.dropsY + 18;
  svg.append(
    s("line", { x1: APP.x + 10, x2: APP.x + APP.w - 10, y1: g.dropsY, y2: g.dropsY, stroke: "#e3e6ea" }),
    s(
      "a",
      { href: "/events?kind=net." },
      s("title", null, `packets dropped (no conduit allows them):\n${detail || "none yet"}`),
      s("circle", { cx: APP.x + 18, cy: y - 4, r: 6, class: "drop" }),
      s("text", { x: APP.x + 30, y, "data-drops": "" }, `dropped  IT→OT ${fmtCount(itOt)} · OT→IT ${fmtCount(otIt)} pkts`),
      other ? s("text", { x: APP.x + 30, y: y + 16, class: "small" }, `${fmtCount(other)} other (to the unit itself, other interfaces)`) : null,
    ),
  );
  // devices the appliance polls
  if (g.devices.length) {
    const top = g.devices[0].y - 20;
    svg.append(s("text", { x: OT.x + 28, y: top, class: "small" }, "FIELD DEVICES (polled by the appliance)"));
  }
  for (const dv of g.devices) {
    const d = dv.device;
    const cls = stateClass(d.state);
    svg.append(
      s(
        "a",
        { href: `/devices#${encodeURIComponent(d.name)}`, "data-device": d.name },
        s("title", null, `${d.name} (${d.protocol || ""}): ${d.state}${d.last_error ? `\n${d.last_error}` : ""}`),
        s("path", { d: `M${APP.x + APP.w},${dv.y} L${OT.x + 28},${dv.y}`, stroke: COLORS[cls] || COLORS.off, "stroke-dasharray": "3 4", "stroke-width": 1.5, fill: "none" }),
        s("circle", { cx: OT.x + 36, cy: dv.y, r: 6, fill: COLORS[cls] || COLORS.off }),
        s("text", { x: OT.x + 48, y: dv.y + 4 }, `${d.name}`),
        s("text", { x: OT.x + OT.w - 12, y: dv.y + 4, "text-anchor": "end", class: "small" }, `${d.protocol || ""} · ${d.state}`),
      ),
    );
  }
  return svg;
}

// The same picture as a list, for a narrow screen: the sides with their links, each conduit
// (from → to, services, counters, passing or not), the drops, the devices polled.
export function drawList(st, prev) {
  const g = layout(st);
  const prevPk = new Map((prev?.conduits || []).map((c) => [c.name, Number(c.packets || 0)]));
  const side = (label, cls, links) =>
    h(
      "div",
      { class: `ov-side ${cls}` },
      h("strong", null, label),
      " ",
      links.length ? links.map((l) => [pill(linkUp(l) ? "ok" : "bad", `${portLabel(l)} ${linkUp(l) ? "up" : "DOWN"}`), " "]) : h("span", { class: "muted small" }, "no link"),
      h("div", { class: "mono small" }, links.flatMap((l) => l.addresses || []).join("  ")),
    );
  const conduits = g.lanes.map(({ conduit: c }) => {
    const active = c.active !== false && c.enabled !== false;
    const pk = Number(c.packets || 0);
    const silent = active && c.answering === false;
    const flowing = active && !silent && prevPk.has(c.name) && pk > prevPk.get(c.name);
    return h(
      "li",
      { class: `ov-conduit${active ? "" : " inactive"}${flowing ? " flowing" : ""}`, "data-conduit": c.name },
      h("a", { href: `/conduits#${encodeURIComponent(c.name)}`, class: "lane-name" }, c.name),
      " ",
      silent ? pill("bad", "not answering") : active ? pill(pk > 0 ? "ok" : "info", flowing ? "passing" : pk > 0 ? "active" : "idle") : pill("off", "not passing"),
      h("div", { class: "mono small" }, `${key(c.from)} → ${key(c.to)}`),
      h("div", { class: "small" }, h("span", { class: "mono" }, (c.services || []).join(" ")), " · ", h("span", { class: "counter", "data-counter": c.name }, `${fmtCount(pk)} pkts · ${fmtBytes(c.bytes)}`)),
    );
  });
  const drops = dropTotals(st.drops);
  const itOt = drops.it_ot || 0;
  const otIt = drops.ot_it || 0;
  return h(
    "div",
    { class: "ov-list", role: "group", "aria-label": "IT network, the appliance and the OT network" },
    side("IT network", "zone-it", g.itLinks),
    h(
      "div",
      { class: "ov-app" },
      h("strong", null, `${st.unit?.name || "appliance"} · default deny`),
      " ",
      pill(unitHealth(st.health).state, unitHealth(st.health).state || "unknown"),
      conduits.length ? h("ul", { class: "ov-conduits" }, conduits) : h("p", { class: "muted small" }, "no conduits: nothing crosses"),
      g.more > 0 ? h("a", { href: "/conduits", class: "small" }, `+ ${g.more} more conduits`) : null,
      h("a", { href: "/events?kind=net.", class: "small", "data-drops": "" }, `dropped IT→OT ${fmtCount(itOt)} · OT→IT ${fmtCount(otIt)} pkts`),
    ),
    side("OT network", "zone-ot", g.otLinks),
    g.devices.length
      ? h(
          "ul",
          { class: "ov-devices small" },
          g.devices.map(({ device: d }) => h("li", { "data-device": d.name }, pill(d.state, d.state || "?"), " ", h("a", { href: `/devices#${encodeURIComponent(d.name)}` }, d.name), ` ${d.protocol || ""}`)),
        )
      : null,
  );
}
