// Device setup: the `devices` section as forms (a device list, the chosen device's form, its
// tags), with "Test connection", "Read registers" (Modbus) and "Browse" (OPC UA) asked of
// the device through POST /api/devices/probe before anything is saved.
//
// The page keeps a working copy of the section (`devices`); the form shows one device and
// is read back into the copy before anything else happens (sync). Reading back starts from
// the device as loaded, so keys the form does not show are kept; fields that do not apply
// to the protocol are left out, and empty fields too (the unit's defaults apply).

import { $, $$, api, can, checkRequired, clear, clearErrors, h, markRequired, qs, scrollBox, showErrors, splitPath, toast } from "../lib.js";
import { loadSection, saveSection } from "../section.js";
import { sessionReady } from "../shell.js";

const form = $("#dev-form");
const panel = $("#dev-panel");
const PROTOCOLS = { "modbus-tcp": "Modbus TCP", "modbus-rtu": "Modbus RTU", opcua: "OPC UA" };
const ADDRESS_HINT = { "modbus-tcp": "e.g. 192.168.50.11:502", opcua: "e.g. opc.tcp://192.168.50.20:4840" };
const TYPES = ["bool", "bit", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"];
const BIT_TABLES = new Set(["coil", "discrete"]);

let devices = []; // the working copy of the section
let sel = -1; // the device shown in the form
let errors = []; // the unit's last refusal (paths "devices[i]...."), until the list changes
let openDetails = new Set(); // tag rows whose details are unfolded
let browseTrail = []; // OPC UA browse: [{node, name}] from the Objects folder down

// -- small helpers ---------------------------------------------------------------------------

const clone = (x) => (x === undefined ? undefined : JSON.parse(JSON.stringify(x)));

function getPath(obj, dotted) {
  return dotted.split(".").reduce((o, k) => (o === null || o === undefined ? undefined : o[k]), obj);
}

function setPath(obj, dotted, value) {
  const keys = dotted.split(".");
  let o = obj;
  for (const k of keys.slice(0, -1)) {
    if (o[k] === null || typeof o[k] !== "object") o[k] = {};
    o = o[k];
  }
  o[keys.at(-1)] = value;
}

function deletePath(obj, dotted) {
  const keys = dotted.split(".");
  const parent = keys.length > 1 ? getPath(obj, keys.slice(0, -1).join(".")) : obj;
  if (parent && typeof parent === "object") delete parent[keys.at(-1)];
}

// A number typed in: sent as a number; anything else is sent as typed, so the unit's own
// check names it at the field ("must be a number, not 'abc'"). Empty: left out.
function readControl(el) {
  if (el.type === "checkbox") return el.checked;
  const text = el.value.trim();
  if (text === "") return undefined;
  if ("num" in el.dataset) return /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text) ? Number(text) : text;
  return text;
}

function writeControl(el, v) {
  if (el.type === "checkbox") el.checked = v === undefined || v === null ? el.dataset.default !== "false" : !!v;
  else if (el.tagName === "SELECT") {
    el.value = v === undefined || v === null ? el.options[0].value : String(v);
    if (el.selectedIndex < 0) {
      el.append(h("option", { value: String(v) }, String(v))); // a value the list does not offer: kept
      el.value = String(v);
    }
  } else el.value = v === undefined || v === null ? "" : String(v);
}

// A select left at its first choice (the unit's default) is left out when the item did not
// have the key: a new tag does not grow "publish: on-change" and three more lines of YAML.
function readFor(el, original, key) {
  const v = readControl(el);
  if (el.tagName === "SELECT" && !("keep" in el.dataset) && el.selectedIndex === 0 && getPath(original, key) === undefined) return undefined;
  return v;
}

function applies(el, protocol) {
  const scope = el.closest("[data-for]");
  return !scope || scope.dataset.for.split(" ").includes(protocol);
}

function slug(text, fallback) {
  const s = String(text || "")
    .toLowerCase()
    .replace(/[^a-z0-9_-]+/g, "-")
    .replace(/^[-_]+|[-_]+$/g, "")
    .slice(0, 40);
  return s || fallback;
}

function unique(base, taken) {
  const used = new Set(taken);
  if (!used.has(base)) return base;
  for (let i = 2; ; i += 1) if (!used.has(`${base}-${i}`)) return `${base}-${i}`;
}

function where(d) {
  if (d.protocol === "modbus-rtu") return d.serial?.port ? `${d.serial.port} unit ${d.unit_id ?? 1}` : "";
  return d.address || "";
}

function deviceOfPath(path) {
  const p = splitPath(path);
  return p[0] === "devices" && typeof p[1] === "number" ? p[1] : null;
}

// -- the device list -------------------------------------------------------------------------

function renderList() {
  const bad = new Set(errors.map((e) => deviceOfPath(e.path)).filter((i) => i !== null));
  const rows = devices.map((d, i) =>
    h(
      "tr",
      { "data-device": i, class: [i === sel ? "selected" : "", bad.has(i) ? "has-error" : ""].join(" ").trim() || null, onclick: () => choose(i) },
      h(
        "td",
        null,
        h("a", { href: `#${encodeURIComponent(d.name || "")}`, class: "dev-pick", onclick: (ev) => (ev.preventDefault(), ev.stopPropagation(), choose(i)) }, d.name || "(no name)"),
        bad.has(i) ? h("span", { class: "pill bad ds-flag", title: "the unit refused something in this device: open it" }, "error") : "",
      ),
      h("td", null, PROTOCOLS[d.protocol] || d.protocol || ""),
      h("td", null, h("code", null, where(d))),
      h("td", { class: "num" }, String((d.tags || []).length)),
      h("td", null, d.enabled === false ? "no" : "yes"),
    ),
  );
  const head = h("thead", null, h("tr", null, ["name", "protocol", "address", "tags", "enabled"].map((t, i) => h("th", { class: i === 3 ? "num" : null }, t))));
  const body = h("tbody", null, rows.length ? rows : h("tr", null, h("td", { class: "empty", colspan: 5 }, "no field devices yet: Add device")));
  clear($("#dev-list"), scrollBox(h("table", { class: "grid ds-list" }, head, body)));
  $("#dev-dup").disabled = sel < 0;
  $("#dev-remove").disabled = sel < 0;
}

function choose(i) {
  if (i === sel) return;
  sync();
  sel = i;
  openDetails = new Set();
  resetProbe();
  renderList();
  renderForm();
  if (errors.length) presentErrors();
}

// -- the device form -------------------------------------------------------------------------

const deviceControls = () => $$("[data-f]", panel);

function renderForm() {
  panel.hidden = sel < 0;
  if (sel < 0) return;
  const d = devices[sel];
  $("#dev-title").textContent = d.name || "(new)";
  for (const el of deviceControls()) {
    el.dataset.path = `devices[${sel}].${el.dataset.f}`;
    writeControl(el, getPath(d, el.dataset.f));
  }
  showFor(d.protocol || "modbus-tcp");
  renderTags();
}

function showFor(protocol) {
  for (const el of $$("[data-for]", panel)) el.hidden = !el.dataset.for.split(" ").includes(protocol);
  const addr = $("[data-f=address]", panel);
  addr.placeholder = ADDRESS_HINT[protocol] || "";
}

// The form read back into the device it shows.
function collectDevice() {
  const out = clone(devices[sel]);
  const protocol = $("[data-f=protocol]", panel).value;
  for (const el of deviceControls()) {
    const key = el.dataset.f;
    const v = applies(el, protocol) ? readFor(el, devices[sel], key) : undefined;
    if (v === undefined) deletePath(out, key);
    else setPath(out, key, v);
  }
  if (protocol !== "modbus-rtu") delete out.serial;
  if (protocol !== "opcua") delete out.security;
  else {
    const s = out.security || {};
    if ((s.policy ?? "None") === "None" && (s.mode ?? "None") === "None" && !s.username && !s.password) delete out.security;
  }
  out.tags = collectTags(protocol);
  return out;
}

function sync() {
  if (sel >= 0 && sel < devices.length) devices[sel] = collectDevice();
}

// -- the tags of the device ------------------------------------------------------------------

// scope: "modbus" or "opcua" (only for that kind of device); shown and saved only there
const TAG_COLS = [
  { key: "name", label: "name", required: true, placeholder: "e.g. temperature" },
  { key: "table", label: "table", scope: "modbus", options: [["holding", "holding"], ["input", "input"], ["coil", "coil"], ["discrete", "discrete"]] },
  { key: "address", label: "address", scope: "modbus", num: true, required: true, placeholder: "e.g. 100" },
  { key: "node", label: "node id", scope: "opcua", required: true, placeholder: "e.g. ns=2;s=Temperature" },
  { key: "type", label: "type", options: [["", "default"], ...TYPES.map((t) => [t, t])] },
  { key: "bit", label: "bit", scope: "modbus", num: true, placeholder: "e.g. 0" },
  { key: "length", label: "length", scope: "modbus", num: true, placeholder: "e.g. 8" },
  { key: "unit", label: "unit", placeholder: "e.g. degC" },
  { key: "scale", label: "scale", num: true, placeholder: "empty: 1" },
  { key: "offset", label: "offset", num: true, placeholder: "empty: 0" },
  { key: "writable", label: "writable", check: true },
  { key: "description", label: "description" },
];

const DETAIL_GROUPS = [
  {
    key: "alarms",
    legend: "Limit alarms",
    fields: [
      ["alarms.low_low", "low low"],
      ["alarms.low", "low"],
      ["alarms.high", "high"],
      ["alarms.high_high", "high high"],
      ["alarms.hysteresis", "hysteresis", "empty: 0"],
      ["alarms.delay", "delay (s)", "empty: 0"],
    ],
  },
  { key: "deadband", legend: "Deadband (smaller changes are not stored)", fields: [["deadband.absolute", "absolute"], ["deadband.percent", "percent"]] },
  {
    key: null,
    legend: "Publishing and decoding",
    fields: [
      ["publish", "publish", null, [["on-change", "on change"], ["every-poll", "every poll"]]],
      ["max_silence", "store at least every (s)", "e.g. 60"],
      ["byte_order", "byte order", null, [["big", "big"], ["little", "little"]], "modbus"],
      ["word_order", "word order", null, [["big", "big"], ["little", "little"]], "modbus"],
    ],
  },
];

const kindOf = (protocol) => (protocol === "opcua" ? "opcua" : "modbus");

function tagControl(col, tag, i, j) {
  const path = `devices[${i}].tags[${j}].${col.key}`;
  const common = { "data-k": col.key, "data-path": path, "aria-label": `${col.label} of tag ${j + 1}` };
  let el;
  if (col.check) el = h("input", { ...common, type: "checkbox" });
  else if (col.options) el = h("select", common, col.options.map(([v, t]) => h("option", { value: v }, t)));
  else el = h("input", { ...common, placeholder: col.placeholder || "", spellcheck: "false", autocomplete: "off", required: col.required || null, inputmode: col.num ? "decimal" : null });
  if (col.num) el.dataset.num = "";
  if (col.key === "table") el.dataset.keep = ""; // a Modbus tag needs its table, default or not
  if (col.check) el.dataset.default = "false";
  writeControl(el, getPath(tag, col.key));
  return el;
}

function detailRow(tag, i, j, kind, span) {
  const groups = DETAIL_GROUPS.map((g) =>
    h(
      "fieldset",
      { class: "ds-box", "data-path": g.key ? `devices[${i}].tags[${j}].${g.key}` : null },
      h("legend", null, g.legend),
      h(
        "div",
        { class: "ds-grid" },
        g.fields
          .filter(([, , , , scope]) => !scope || scope === kind)
          .map(([key, label, placeholder, options]) => {
            const common = { "data-k": key, "data-path": `devices[${i}].tags[${j}].${key}`, "aria-label": `${label} of tag ${j + 1}` };
            const el = options ? h("select", common, options.map(([v, t]) => h("option", { value: v }, t))) : h("input", { ...common, inputmode: "decimal", placeholder: placeholder || "", "data-num": "" });
            writeControl(el, getPath(tag, key));
            return h("label", null, label, " ", el);
          }),
      ),
    ),
  );
  return h("tr", { class: "tag-detail", "data-detail": j, hidden: !openDetails.has(j) }, h("td", { colspan: span }, h("div", { class: "ds-details" }, groups)));
}

function renderTags() {
  const d = devices[sel];
  const kind = kindOf(d.protocol);
  const cols = TAG_COLS.filter((c) => !c.scope || c.scope === kind);
  const span = cols.length + 1;
  const rows = [];
  (d.tags || []).forEach((tag, j) => {
    rows.push(
      h(
        "tr",
        { "data-tag": j },
        cols.map((c) => h("td", { class: c.check ? "ds-c" : null }, tagControl(c, tag, sel, j))),
        h(
          "td",
          { class: "act nowrap" },
          h("a", { href: "#", class: "ds-more", role: "button", "aria-expanded": String(openDetails.has(j)), onclick: (ev) => (ev.preventDefault(), toggleDetail(j)) }, openDetails.has(j) ? "less" : "alarms…"),
          " ",
          h("button", { type: "button", class: "btn small danger needs-admin", "aria-label": `Remove tag ${j + 1}`, onclick: () => removeTag(j) }, "Remove"),
        ),
      ),
      detailRow(tag, sel, j, kind, span),
    );
  });
  const req = () => h("abbr", { class: "req", title: "required" }, "*");
  const head = h("thead", null, h("tr", null, cols.map((c) => h("th", null, c.label, c.required ? [" ", req()] : "")), h("th", { class: "act" }, "")));
  const body = h("tbody", null, rows.length ? rows : h("tr", null, h("td", { class: "empty", colspan: span }, "no tags: add one, or read registers and add what you find")));
  clear($("#tag-rows"), scrollBox(h("table", { class: "grid edit ds-tags" }, head, body)));
}

function collectTags(protocol) {
  const kind = kindOf(protocol);
  const old = devices[sel].tags || [];
  return $$("#tag-rows tr[data-tag]").map((tr) => {
    const j = Number(tr.dataset.tag);
    const out = clone(old[j]) || {};
    const detail = $(`#tag-rows tr[data-detail="${j}"]`);
    for (const el of [...$$("[data-k]", tr), ...(detail ? $$("[data-k]", detail) : [])]) {
      const v = readFor(el, old[j] || {}, el.dataset.k);
      if (v === undefined) deletePath(out, el.dataset.k);
      else setPath(out, el.dataset.k, v);
    }
    // what does not apply to this kind of device is left out
    for (const c of TAG_COLS) if (c.scope && c.scope !== kind) delete out[c.key];
    if (kind === "opcua") for (const k of ["byte_order", "word_order"]) delete out[k];
    for (const k of ["alarms", "deadband"]) {
      const o = out[k];
      if (!o || typeof o !== "object" || Object.values(o).every((v) => v === null || v === undefined)) delete out[k];
    }
    if (out.writable === false && !("writable" in (old[j] || {}))) delete out.writable;
    return out;
  });
}

function toggleDetail(j) {
  if (openDetails.has(j)) openDetails.delete(j);
  else openDetails.add(j);
  const row = $(`#tag-rows tr[data-detail="${j}"]`);
  if (row) row.hidden = !openDetails.has(j);
  const link = $(`#tag-rows tr[data-tag="${j}"] .ds-more`);
  if (link) {
    link.textContent = openDetails.has(j) ? "less" : "alarms…";
    link.setAttribute("aria-expanded", String(openDetails.has(j)));
  }
}

function changed() {
  // indices shift: the unit's last refusal no longer names the right rows
  if (errors.length) {
    errors = [];
    clearErrors(form);
  }
}

function addTag(tag) {
  sync();
  changed();
  const d = devices[sel];
  d.tags = [...(d.tags || []), tag];
  renderList();
  renderTags();
  const row = $(`#tag-rows tr[data-tag="${d.tags.length - 1}"]`);
  const name = row && $("[data-k=name]", row);
  if (name) {
    name.focus();
    if (tag.name) name.select();
  }
}

function removeTag(j) {
  sync();
  changed();
  devices[sel].tags.splice(j, 1);
  openDetails = new Set([...openDetails].filter((k) => k !== j).map((k) => (k > j ? k - 1 : k)));
  renderList();
  renderTags();
}

// -- asking the device (POST /api/devices/probe) -----------------------------------------

function probeDevice() {
  sync();
  const { name: _name, tags: _tags, ...rest } = devices[sel];
  return { ...rest, tags: [] }; // the name and the tags do not matter to a probe
}

function resetProbe() {
  for (const id of ["#probe-result", "#read-result", "#browse-result"]) {
    clear($(id));
    $(id).className = "ds-result";
  }
  clear($("#read-grid"));
  clear($("#browse-grid"));
  clear($("#browse-path"));
  browseTrail = [];
}

function ms(x) {
  const v = Number(x);
  return Number.isFinite(v) ? `${v < 10 ? v.toFixed(1) : Math.round(v)} ms` : "";
}

// One probe; the answer's message at `out`, green or red. 422: the bad field marked.
async function probe(extra, out, button) {
  const device = probeDevice();
  // what an earlier probe refused is asked again now (a save's marks on the tags stay)
  clearErrors($("#read-box"));
  for (const el of deviceControls()) {
    if (el.getAttribute("aria-invalid") !== "true") continue;
    el.removeAttribute("aria-invalid");
    if (el.nextElementSibling?.classList.contains("field-error")) el.nextElementSibling.remove();
  }
  out.className = "ds-result";
  clear(out, "asking the device…");
  button.disabled = true;
  try {
    const r = await api("POST", "/api/devices/probe", { device, ...extra });
    out.classList.add(r.ok ? "ok" : "bad");
    clear(out, r.ok ? "✓ " : "✗ ", r.message || (r.ok ? "the device answered" : "no answer"), r.elapsed_ms !== undefined ? ` · ${ms(r.elapsed_ms)}` : "");
    return r;
  } catch (e) {
    out.classList.add("bad");
    if (e.status === 422) {
      const entries = (e.errors.length ? e.errors : [{ path: e.field, message: e.message }]).map((x) => ({
        ...x,
        path: String(x.path || "").replace(/^device(\.|$)/, `devices[${sel}]$1`),
      }));
      showErrorsHere({ errors: entries, message: e.message });
      clear(out, "✗ fix the marked field first");
    } else clear(out, "✗ ", e.message);
    return null;
  } finally {
    button.disabled = false;
  }
}

$("#probe-btn").addEventListener("click", () => probe({}, $("#probe-result"), $("#probe-btn")));

$("#read-btn").addEventListener("click", async () => {
  const table = $("#read-table").value;
  const address = readControl($("#read-address"));
  const count = readControl($("#read-count"));
  const r = await probe({ read: { table, address, count } }, $("#read-result"), $("#read-btn"));
  if (!r || !r.read) {
    clear($("#read-grid"));
    return;
  }
  const bits = BIT_TABLES.has(r.read.table);
  const start = Number(r.read.address);
  const rows = (r.read.values || []).map((v, k) => ({ address: start + k, value: v }));
  const head = h("thead", null, h("tr", null, h("th", { class: "num" }, "address"), h("th", { class: "num" }, "value"), h("th", null, bits ? "" : "hex"), h("th", { class: "act" }, "")));
  const body = h(
    "tbody",
    null,
    rows.map((x) =>
      h(
        "tr",
        { "data-address": x.address },
        h("td", { class: "num" }, String(x.address)),
        h("td", { class: "num" }, bits ? (x.value ? "on" : "off") : String(x.value)),
        h("td", null, bits ? "" : h("code", null, `0x${Number(x.value).toString(16).toUpperCase().padStart(4, "0")}`)),
        h("td", { class: "act" }, h("button", { type: "button", class: "btn small add-as-tag", onclick: () => addReadTag(r.read.table, x.address, bits) }, "Add as tag")),
      ),
    ),
  );
  clear($("#read-grid"), scrollBox(h("table", { class: "grid ds-read" }, head, body)));
});

function addReadTag(table, address, bits) {
  sync();
  const names = (devices[sel].tags || []).map((t) => t.name);
  addTag({ name: unique(`${table}-${address}`, names), table, address, type: bits ? "bool" : "uint16" });
  toast(`Tag ${table} ${address} added below: give it a name, then save.`);
}

async function browse(node, name) {
  const r = await probe({ browse: node || "" }, $("#browse-result"), $("#browse-btn"));
  if (!r || !r.browse) return;
  const at = browseTrail.findIndex((x) => x.node === (node || ""));
  if (at >= 0) browseTrail = browseTrail.slice(0, at + 1);
  else browseTrail.push({ node: node || "", name: name || "Objects" });
  clear(
    $("#browse-path"),
    browseTrail.flatMap((x, k) => [k ? " › " : "", k === browseTrail.length - 1 ? h("strong", null, x.name) : h("a", { href: "#", onclick: (ev) => (ev.preventDefault(), browse(x.node, x.name)) }, x.name)]),
  );
  const kids = r.browse.children || [];
  const head = h("thead", null, h("tr", null, ["name", "kind", "type", "value", "node id", ""].map((t) => h("th", null, t))));
  const body = h(
    "tbody",
    null,
    kids.length
      ? kids.map((c) =>
          h(
            "tr",
            { "data-node": c.node_id },
            h("td", null, c.class === "Object" ? h("a", { href: "#", class: "browse-into", onclick: (ev) => (ev.preventDefault(), browse(c.node_id, c.name)) }, `${c.name} ›`) : c.name),
            h("td", null, c.class || ""),
            h("td", null, c.type || ""),
            h("td", null, c.value === null || c.value === undefined ? "" : typeof c.value === "object" ? JSON.stringify(c.value) : String(c.value)),
            h("td", null, h("code", null, c.node_id)),
            h("td", { class: "act" }, c.class === "Variable" ? h("button", { type: "button", class: "btn small add-as-tag", onclick: () => addNodeTag(c) }, "Add as tag") : ""),
          ),
        )
      : h("tr", null, h("td", { class: "empty", colspan: 6 }, "nothing below this node")),
  );
  clear($("#browse-grid"), scrollBox(h("table", { class: "grid ds-browse" }, head, body)));
}

function addNodeTag(c) {
  sync();
  const names = (devices[sel].tags || []).map((t) => t.name);
  const tag = { name: unique(slug(c.name, "value"), names), node: c.node_id };
  if (c.writable) tag.writable = false; // shown, so the person decides; reading is the default
  addTag(tag);
  toast(`Tag ${tag.name} (${c.node_id}) added below.`);
}

$("#browse-btn").addEventListener("click", () => {
  browseTrail = [];
  browse("", "Objects");
});

$("#tag-add").addEventListener("click", () => addTag(devices[sel].protocol === "opcua" ? {} : { table: "holding" }));

// -- list actions --------------------------------------------------------------------------

$("#dev-add").addEventListener("click", () => {
  sync();
  changed();
  const name = unique("device", devices.map((d) => d.name));
  devices.push({ name, protocol: "modbus-tcp", tags: [] });
  sel = devices.length - 1;
  openDetails = new Set();
  resetProbe();
  renderList();
  renderForm();
  $("[data-f=name]", panel).focus();
  $("[data-f=name]", panel).select();
});

$("#dev-dup").addEventListener("click", () => {
  if (sel < 0) return;
  sync();
  changed();
  const copy = clone(devices[sel]);
  copy.name = unique(`${slug(copy.name, "device").slice(0, 42)}-copy`, devices.map((d) => d.name));
  devices.splice(sel + 1, 0, copy);
  sel += 1;
  resetProbe();
  renderList();
  renderForm();
  $("[data-f=name]", panel).focus();
});

$("#dev-remove").addEventListener("click", () => {
  if (sel < 0) return;
  changed();
  const gone = devices[sel].name;
  devices.splice(sel, 1);
  sel = devices.length ? Math.min(sel, devices.length - 1) : -1;
  openDetails = new Set();
  resetProbe();
  renderList();
  renderForm();
  toast(`${gone || "the device"} removed here: "Save to draft" makes it so, "Discard edits" brings it back.`);
});

$("[data-f=protocol]", panel).addEventListener("change", () => {
  // the tags' columns follow the protocol: read back under the old one, shown under the new
  const d = devices[sel];
  const before = d.protocol;
  const tags = collectTags(before || "modbus-tcp");
  d.protocol = $("[data-f=protocol]", panel).value;
  d.tags = tags;
  showFor(d.protocol);
  renderTags();
  resetProbe();
  renderList();
});

panel.addEventListener("input", (ev) => {
  const f = ev.target.dataset?.f;
  if (f && f !== "name" && f !== "description") {
    // the last answer was for other settings: it no longer says anything about these
    clear($("#probe-result"));
    $("#probe-result").className = "ds-result";
  }
  if (f === "name") $("#dev-title").textContent = ev.target.value || "(new)";
  if (f === "name" || f === "address" || f === "serial.port" || f === "unit_id") {
    // the list follows what is typed
    const row = $(`#dev-list tr[data-device="${sel}"]`);
    if (row) {
      const d = { ...devices[sel], protocol: $("[data-f=protocol]", panel).value };
      for (const k of ["name", "address", "unit_id"]) d[k] = readControl($(`[data-f=${k}]`, panel));
      d.serial = { ...(d.serial || {}), port: readControl($("[data-f='serial.port']", panel)) };
      $(".dev-pick", row).textContent = d.name || "(no name)";
      $("td:nth-child(3) code", row).textContent = where(d);
    }
  }
});

// -- errors ----------------------------------------------------------------------------------

// The unit's errors at their fields (the rest in the box above); folded parts that hold a
// marked field are unfolded, so the mark is seen.
function showErrorsHere(err) {
  showErrors(form, err);
  for (const el of $$("[aria-invalid=true]", form)) {
    const row = el.closest("tr[data-detail]");
    if (row && row.hidden) toggleDetail(Number(row.dataset.detail));
    const fold = el.closest("details");
    if (fold) fold.open = true;
  }
  const first = $("[aria-invalid=true]", form);
  if (first && typeof first.focus === "function") first.focus();
}

// The unit's last refusal as seen from the device shown: its own problems at their fields,
// the other devices' in the box, each saying which device and tag (those are marked in the list).
function presentErrors() {
  const entries = errors.map((x) => {
    const i = deviceOfPath(x.path);
    if (i === null || i === sel) return x;
    return { path: null, message: `${describe(x.path)}: ${x.message}` };
  });
  showErrorsHere({ errors: entries, message: entries[0]?.message || "" });
}

// "devices[2].tags[0].address" -> "device plc2, tag counter, address"
function describe(path) {
  const p = splitPath(path);
  const d = devices[p[1]] || {};
  const out = [`device ${d.name || p[1] + 1}`];
  let rest = p.slice(2);
  if (rest[0] === "tags" && typeof rest[1] === "number") {
    const t = (d.tags || [])[rest[1]] || {};
    out.push(`tag ${t.name || rest[1] + 1}`);
    rest = rest.slice(2);
  }
  if (rest.length) out.push(rest.join(" ").replaceAll("_", " "));
  return out.join(", ");
}

// -- load and save -------------------------------------------------------------------------

async function load(keep) {
  const { value, source, revision } = await loadSection("devices");
  devices = clone(Array.isArray(value) ? value : []);
  errors = [];
  clearErrors(form);
  const want = keep ?? qs("device");
  const at = devices.findIndex((d) => d.name === want);
  sel = at >= 0 ? at : devices.length ? 0 : -1;
  openDetails = new Set();
  resetProbe();
  $("#source-note").textContent =
    source === "draft" ? `Editing the draft (revision ${revision ?? "?"}).` : source === "running" ? "No draft yet: showing the running configuration; saving creates a draft." : "No configuration yet.";
  renderList();
  renderForm();
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  sync();
  clearErrors(form);
  if (sel >= 0 && checkRequired(panel)) return;
  $("#save").disabled = true;
  try {
    const r = await saveSection("devices", devices);
    for (const w of r?.warnings || []) toast(`warning: ${typeof w === "string" ? w : w.message || JSON.stringify(w)}`, "bad", 8000);
    toast("Devices saved to the draft.");
    await load(sel >= 0 ? devices[sel].name : undefined);
  } catch (e) {
    errors = e.errors.length ? e.errors : [{ path: e.field, message: e.message }];
    renderList();
    presentErrors();
  } finally {
    $("#save").disabled = false;
  }
});

$("#reload").addEventListener("click", () => load(sel >= 0 ? devices[sel]?.name : undefined).catch((e) => showErrors(form, e)));
markRequired(panel);
load().catch((e) => showErrors(form, e));
sessionReady.then(() => {
  $("#editable").disabled = !can("admin");
});
