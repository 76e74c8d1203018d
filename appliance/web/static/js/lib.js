// Shared helpers for every page: the API client (session cookie + CSRF header), DOM
// building from text nodes only (never parsed markup), formatting, errors at the field, widgets.

const csrfMeta = document.querySelector('meta[name="csrf-token"]');
let csrf = csrfMeta ? csrfMeta.content : "";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.field = this.body.field || null;
    this.errors = Array.isArray(this.body.errors) ? this.body.errors : [];
  }
}

export function setCsrf(token) {
  if (token) csrf = token;
}

// One call for every request the UI makes. body: object (JSON), string (sent as text/yaml)
// or undefined. Returns parsed JSON, text for non-JSON answers, null for 204.
export async function api(method, path, body, { raw = false } = {}) {
  const headers = { Accept: "application/json" };
  const opts = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrf;
  if (typeof body === "string") {
    headers["Content-Type"] = "text/yaml";
    opts.body = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, { error: `the unit does not answer (${e.message})` });
  }
  if (resp.status === 401 && !path.startsWith("/api/session")) {
    const here = location.pathname + location.search;
    location.assign(`/login?next=${encodeURIComponent(here)}`);
    throw new ApiError(401, { error: "session ended: log in again" });
  }
  if (resp.status === 403) {
    const b = await resp.clone().json().catch(() => null);
    if (b && b.error === "setup required") {
      location.assign("/setup");
      throw new ApiError(403, b);
    }
  }
  if (resp.status === 204) return null;
  const type = resp.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await resp.json().catch(() => null) : await resp.text();
  if (!resp.ok) {
    const err = new ApiError(resp.status, typeof data === "object" && data ? data : { error: String(data || resp.statusText).slice(0, 300) });
    const retry = Number(resp.headers.get("Retry-After"));
    if (retry > 0) err.retryAfter = retry;
    throw err;
  }
  return raw ? resp : data;
}

// Lists come back either bare or wrapped ({items: [...]}, {events: [...]} ...).
export function listOf(data, ...keys) {
  if (Array.isArray(data)) return data;
  if (!data || typeof data !== "object") return [];
  for (const k of [...keys, "items", "results", "data"]) if (Array.isArray(data[k])) return data[k];
  return [];
}

// Which revisions there are: the newest draft, pending and confirmed one (null when none).
// Pages ask this before they ask for the draft, which answers 404 when there is none (and
// the browser logs every 404 in its console).
export async function revisionFacts() {
  const list = listOf(await api("GET", "/api/revisions"), "revisions");
  const first = (state) => list.find((r) => r.state === state) || null;
  const pending = first("pending");
  const confirmed = first("confirmed");
  return { draft: first("draft"), pending, confirmed, running: pending || confirmed };
}

// The draft's document answer (GET /api/config/draft), null when there is no draft.
export async function draftOrNull() {
  if (!(await revisionFacts()).draft) return null;
  return api("GET", "/api/config/draft").catch((e) => (e.status === 404 ? null : Promise.reject(e)));
}

// -- DOM ------------------------------------------------------------------------------------

// h("td", {class: "num", dataset: {path: "x"}, onclick: fn}, "text", child, [more])
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVGNS = "http://www.w3.org/2000/svg";
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVGNS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "text") el.textContent = v;
    else if (k === "value" && "value" in el) el.value = v;
    else if (k === "checked" || k === "disabled" || k === "selected") el[k] = !!v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A table from column specs: [{label, get(row) -> node|text, cls}]
export function table(columns, rows, { empty = "nothing here", rowAttrs, tableClass = "" } = {}) {
  const thead = h("thead", null, h("tr", null, columns.map((c) => h("th", { class: c.cls }, c.label))));
  const body = rows.length
    ? rows.map((r) => h("tr", rowAttrs ? rowAttrs(r) : null, columns.map((c) => h("td", { class: c.cls }, c.get(r)))))
    : [h("tr", null, h("td", { class: "empty", colspan: columns.length }, empty))];
  return scrollBox(h("table", { class: `grid ${tableClass}`.trim() }, thead, h("tbody", null, body)));
}

// A wide table scrolls sideways inside its box, never the page: a shadow on the side that
// has more and a "scroll for more" line say so while it does not fit.
const boxes = typeof ResizeObserver === "function" ? new ResizeObserver((es) => es.forEach((e) => cue(e.target))) : null;

export function scrollBox(el) {
  const wrap = h("div", { class: "table-wrap", tabindex: "0" }, el);
  const hint = h("div", { class: "scroll-cue small muted", "aria-hidden": "true", hidden: true }, "more columns: scroll sideways →");
  const box = h("div", { class: "table-box" }, hint, wrap);
  wrap.addEventListener("scroll", () => cue(wrap), { passive: true });
  if (boxes) boxes.observe(wrap);
  return box;
}

function cue(wrap) {
  if (!wrap.isConnected) {
    if (boxes) boxes.unobserve(wrap); // a table replaced by the next poll's
    return;
  }
  const more = wrap.scrollWidth - wrap.clientWidth > 2;
  wrap.classList.toggle("overflows", more);
  wrap.classList.toggle("at-start", wrap.scrollLeft <= 1);
  wrap.classList.toggle("at-end", wrap.scrollLeft + wrap.clientWidth >= wrap.scrollWidth - 2);
  const hint = wrap.previousElementSibling;
  if (hint) hint.hidden = !more;
}

// -- formatting ---------------------------------------------------------------------------

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

export function fmtCount(n) {
  if (n === null || n === undefined) return "–";
  const v = Number(n);
  if (v < 10000) return String(v);
  if (v < 1e6) return `${(v / 1e3).toFixed(1)}k`;
  if (v < 1e9) return `${(v / 1e6).toFixed(1)}M`;
  return `${(v / 1e9).toFixed(1)}G`;
}

export function toEpoch(t) {
  if (t === null || t === undefined || t === "") return null;
  if (typeof t === "number") return t;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms / 1000;
}

export function fmtTime(t) {
  const e = toEpoch(t);
  if (e === null) return "–";
  const d = new Date(e * 1000);
  const p = (x) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function fmtDuration(sec) {
  if (sec === null || sec === undefined || Number.isNaN(sec)) return "–";
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return `${sec} s`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ${sec % 60} s`;
  if (sec < 86400) return `${Math.floor(sec / 3600)} h ${Math.floor((sec % 3600) / 60)} min`;
  return `${Math.floor(sec / 86400)} d ${Math.floor((sec % 86400) / 3600)} h`;
}

export function fmtAgo(t) {
  const e = toEpoch(t);
  if (e === null) return "never";
  const d = Date.now() / 1000 - e;
  if (d < 0) return `in ${fmtDuration(-d)}`;
  return `${fmtDuration(d)} ago`;
}

export function timeEl(t) {
  const e = toEpoch(t);
  return h("time", { datetime: e === null ? "" : new Date(e * 1000).toISOString(), title: fmtTime(t) }, e === null ? "–" : fmtTime(t));
}

export function fmtValue(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(6)));
  if (typeof v === "boolean") return v ? "true" : "false";
  return String(v);
}

// ok green, degraded amber, fault red, pending blue: as the LEDs.
const STATE_CLASS = {
  warn: "warn", off: "off",
  ok: "ok", good: "ok", up: "ok", confirmed: "ok", active: "ok",
  degraded: "warn", uncertain: "warn", connecting: "warn", warning: "warn", booting: "info",
  fault: "bad", bad: "bad", down: "bad", critical: "bad", error: "bad", "rolled-back": "bad",
  "pending-confirm": "pending", pending: "pending", identify: "pending", draft: "info",
  disabled: "off", superseded: "off", cleared: "off", info: "info", absent: "bad",
};

export function stateClass(state) {
  return STATE_CLASS[String(state).toLowerCase()] || "off";
}

// The header's health from one status answer. The agent works "pending-confirm" out from
// what the net role last applied, seconds behind the revision's own state (`revision`, read
// from the config DB with the same answer): the revision wins, so the header does not say
// PENDING-CONFIRM after a Confirm, nor OK while a trial runs. The precedence is the agent's
// (appliance/agent/health.py): identify, booting, fault > pending-confirm > degraded > ok.
export function headerHealth(health, revision) {
  const hl = unitHealth(health);
  const reasons = hl.reasons || [];
  const pending = !!revision && revision.state === "pending";
  const code = (r) => (typeof r === "string" ? r : r && r.code);
  if (hl.state === "pending-confirm" && !pending) {
    const rest = reasons.filter((r) => code(r) !== "pending-confirm");
    const warned = rest.some((r) => r && typeof r === "object" && (r.severity === "warning" || r.severity === "fault"));
    return { ...hl, state: warned ? "degraded" : "ok", reasons: rest };
  }
  if (pending && (hl.state === "ok" || hl.state === "degraded")) {
    const why = { code: "pending-confirm", severity: "warning", message: `revision ${revision.id} waits for confirmation` };
    return { ...hl, state: "pending-confirm", reasons: [why, ...reasons] };
  }
  return hl;
}

// The unit's own health without the plant's process alarms. Process alarms (a PLC value past
// a limit) belong to production: they have their own indicator and page, and do not make the
// appliance "degraded" (ARCHITECTURE.md, "Health is the unit's, alarms are the plant's"), so
// the badge and the picture's lamp do not flap with the process. Polling trouble (a device
// not answering: comm-loss) is the unit's and stays.
const PROCESS_CODES = new Set(["alarms"]);

export function unitHealth(health) {
  const hl = health || {};
  const all = hl.reasons || [];
  const code = (r) => (typeof r === "string" ? r : r && r.code);
  const reasons = all.filter((r) => !PROCESS_CODES.has(code(r)));
  if (reasons.length === all.length) return hl;
  const warned = reasons.some((r) => r && typeof r === "object" && (r.severity === "warning" || r.severity === "fault"));
  return { ...hl, state: hl.state === "degraded" && !warned ? "ok" : hl.state, reasons };
}

// The plant's active process alarms as the header and the Alarms page count them.
export function alarmSummary(alarms) {
  const active = (alarms && alarms.active) || [];
  const out = { active: active.length, critical: 0, warning: 0, unacked: 0 };
  for (const a of active) {
    if (a.severity === "critical") out.critical += 1;
    else out.warning += 1;
    if (!a.acked) out.unacked += 1;
  }
  return out;
}

export function pill(state, text) {
  return h("span", { class: `pill ${stateClass(state)}` }, text ?? String(state ?? "–"));
}

// -- errors at the field ---------------------------------------------------------------------

export function clearErrors(root) {
  for (const el of $$("[aria-invalid=true]", root)) el.removeAttribute("aria-invalid");
  for (const el of $$(".field-error", root)) el.remove();
  for (const el of $$(".form-error", root)) el.replaceChildren();
}

// Field paths: "conduits[2].from[0]" -> ["conduits", 2, "from", 0]
export function splitPath(path) {
  return String(path || "")
    .split(/\.|\[|\]/)
    .filter((x) => x !== "")
    .map((x) => (/^\d+$/.test(x) ? Number(x) : x));
}

// The form control whose data-path is the longest tail of the error's path
// (the API may prefix it with the section or the list index of the draft).
export function fieldFor(root, path) {
  const want = splitPath(path).join(".");
  let best = null;
  let bestLen = -1;
  for (const el of $$("[data-path]", root)) {
    const p = splitPath(el.dataset.path).join(".");
    if (!p) continue;
    const matches = want === p || want.endsWith(`.${p}`) || want.startsWith(`${p}.`) || want.includes(`.${p}.`);
    const exact = want === p || want.endsWith(`.${p}`);
    const score = p.length + (exact ? 1000 : 0);
    if (matches && score > bestLen) {
      best = el;
      bestLen = score;
    }
  }
  return best;
}

// Show an API error in `root` (a form): every errors[] entry (or the single field) at its
// control, the rest in the form's .form-error box. Returns the number placed at a field.
export function showErrors(root, err) {
  clearErrors(root);
  const entries = err.errors && err.errors.length ? err.errors : [{ path: err.field, message: err.message }];
  const box = $(".form-error", root);
  const loose = [];
  let placed = 0;
  for (const e of entries) {
    const el = e.path ? fieldFor(root, e.path) : null;
    if (el) {
      el.setAttribute("aria-invalid", "true");
      const msg = h("div", { class: "field-error", role: "alert" }, e.message || err.message);
      el.after(msg);
      if (placed === 0) el.focus();
      placed += 1;
    } else {
      loose.push(`${e.path ? `${e.path}: ` : ""}${e.message || err.message}`);
    }
  }
  if (loose.length || !placed) {
    const text = loose.length ? loose.join("\n") : err.message;
    if (box) box.replaceChildren(h("div", { class: "alert bad pre", role: "alert" }, text));
    else toast(text, "bad");
  }
  return placed;
}

// -- small widgets -------------------------------------------------------------------------

export function toast(text, kind = "ok", ms = 5000) {
  let host = $("#toasts");
  if (!host) {
    host = h("div", { id: "toasts", "aria-live": "polite" });
    document.body.append(host);
  }
  const t = h("div", { class: `toast ${kind}`, role: kind === "bad" ? "alert" : "status" }, text);
  host.append(t);
  setTimeout(() => t.remove(), ms);
}

// A modal dialog with a form; resolves with the form's values or null (cancel/Escape).
export function confirmDialog(title, message, { ok = "OK", danger = false } = {}) {
  return new Promise((resolve) => {
    const dlg = h(
      "dialog",
      { class: "modal" },
      h(
        "form",
        { method: "dialog" },
        h("h2", null, title),
        h("p", null, message),
        h(
          "div",
          { class: "actions" },
          h("button", { value: "cancel", type: "submit", class: "btn" }, "Cancel"),
          h("button", { value: "ok", type: "submit", class: danger ? "btn danger" : "btn primary" }, ok),
        ),
      ),
    );
    document.body.append(dlg);
    dlg.addEventListener("close", () => {
      resolve(dlg.returnValue === "ok");
      dlg.remove();
    });
    dlg.showModal();
  });
}

// Run fn every `ms` while the page is visible; a failure shows in `errEl` but keeps polling.
export function poll(fn, ms, errEl) {
  let timer = null;
  let stopped = false;
  let generation = 0;
  const tick = async () => {
    if (stopped) return;
    clearTimeout(timer);
    const mine = ++generation; // a tick started by now() supersedes the running chain
    try {
      await fn();
      if (errEl) errEl.hidden = true;
    } catch (e) {
      if (errEl) {
        errEl.hidden = false;
        errEl.textContent = e.message;
      }
    }
    if (!stopped && mine === generation) timer = setTimeout(tick, document.hidden ? ms * 5 : ms);
  };
  tick();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
    now() {
      tick();
    },
  };
}

export function downloadText(filename, text, type = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function csvOf(columns, rows) {
  const cell = (v) => {
    const t = v === null || v === undefined ? "" : String(v);
    return /[",\n\r]/.test(t) ? `"${t.replaceAll('"', '""')}"` : t;
  };
  return [columns.map(cell).join(","), ...rows.map((r) => r.map(cell).join(","))].join("\r\n") + "\r\n";
}

// An address as people write it: a single host without its /32 or /128.
export function hostOf(net) {
  return String(net ?? "").replace(/\/(32|128)$/, "");
}

export function hostList(list) {
  return (list || []).map(hostOf);
}

// Comma/space/newline separated list from a text input, and back.
export function parseList(text) {
  return String(text || "")
    .split(/[\s,]+/)
    .map((x) => x.trim())
    .filter(Boolean);
}

export function role() {
  return document.body.dataset.role || "";
}

const RANK = { viewer: 1, operator: 2, admin: 3 };
export function can(need) {
  return (RANK[role()] || 0) >= (RANK[need] || 99);
}

export function qs(name) {
  return new URLSearchParams(location.search).get(name);
}

// Local datetime input value <-> ISO string with zone.
export function toLocalInput(iso) {
  const e = toEpoch(iso);
  if (e === null) return "";
  const d = new Date(e * 1000);
  const p = (x) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

export function fromLocalInput(v) {
  if (!v) return null;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? null : d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

// -- required fields -------------------------------------------------------------------------

// Every label around a required control gets a visible mark (and says so to a screen reader).
export function markRequired(root = document) {
  for (const el of $$("label [required]", root)) {
    const label = el.closest("label");
    if (!label || label.querySelector(".req")) continue;
    const mark = h("abbr", { class: "req", title: "required" }, "*");
    const first = [...label.childNodes].find((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
    if (first) {
      first.textContent = first.textContent.replace(/\s+$/, "");
      first.after(" ", mark, " ");
    } else label.prepend(mark, " ");
  }
}

// Required controls left empty, flagged at the field before anything is sent; returns how
// many (0: the form may go). The unit checks again: this only saves a round trip.
export function checkRequired(form) {
  clearErrors(form);
  let missing = 0;
  for (const el of $$("[required]", form)) {
    if (el.disabled || el.closest("[hidden]")) continue;
    if (String(el.value || "").trim()) continue;
    el.setAttribute("aria-invalid", "true");
    el.after(h("div", { class: "field-error", role: "alert" }, "required: fill this in"));
    if (missing === 0) el.focus();
    missing += 1;
  }
  return missing;
}

// -- conduit names ---------------------------------------------------------------------------

const SLUG = (text) =>
  String(text || "")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "");

// A conduit name from who, where to and what: "maintenance-plc1-tcp8080". The owner's mail
// box or first word, the destination's device name when a device has that address (else the
// address), the first service; at most 48 characters of a-z 0-9 - _, unique among `taken`.
export function suggestConduitName({ owner, to, services }, devices = [], taken = []) {
  const who = SLUG(String(owner || "").split("@")[0].split(/\s+/)[0]).slice(0, 16);
  const dest = String((to || [])[0] || "").trim();
  const host = hostOf(dest);
  const dev = devices.find((d) => d && d.address && hostOfAddress(d.address) === host);
  const where = dev ? SLUG(dev.name) : SLUG(host).slice(0, 20);
  const what = SLUG(String((services || [])[0] || "").replace("/", "")).slice(0, 16);
  let base = [who, where, what].filter(Boolean).join("-").replace(/-+/g, "-").slice(0, 48).replace(/-+$/, "");
  if (!base) return "";
  if (!/^[a-z0-9]/.test(base)) base = `c${base}`.slice(0, 48);
  const used = new Set(taken);
  if (!used.has(base)) return base;
  for (let i = 2; i < 1000; i += 1) {
    const name = `${base.slice(0, 48 - String(i).length - 1)}-${i}`;
    if (!used.has(name)) return name;
  }
  return base;
}

// "192.168.50.10:502", "[fd00::1]:502", "opc.tcp://plc:4840/x" -> the host part
function hostOfAddress(address) {
  let a = String(address).replace(/^[a-z.+]+:\/\//i, "").replace(/^[^@/]*@/, "").split("/")[0];
  if (a.startsWith("[")) return a.slice(1, a.indexOf("]"));
  if ((a.match(/:/g) || []).length === 1) a = a.split(":")[0];
  return a;
}
