// The unit's networking without YAML: its ports, the links now (with their DHCP leases), and
// four forms, each saving one section of the draft: interfaces (with their routes, DHCP and
// VLANs), the mode (routed or transparent bridge), DNS and time.

import { $, $$, api, can, checkRequired, clear, clearErrors, draftOrNull, fieldFor, fmtAgo, fmtBytes, h, listOf, markRequired, parseList, pill, poll, revisionFacts, showErrors, table, toast } from "../lib.js";
import { saveSection } from "../section.js";
import { onStatus, sessionReady } from "../shell.js";

// -- the document's networking sections ------------------------------------------------------

// The sections as the draft (else the running revision) holds them; time, dns and bridge are
// left out of a document while unset, so undefined here means their defaults.
async function loadDocument() {
  const draft = await draftOrNull();
  if (draft) return { doc: draft.document || {}, source: "draft", revision: draft.revision?.id ?? null };
  const facts = await revisionFacts();
  if (!facts.running) return { doc: {}, source: "none", revision: null };
  try {
    const run = await api("GET", "/api/config/running");
    return { doc: run.document || {}, source: "running", revision: run.revision?.id ?? null };
  } catch (e) {
    if (e.status !== 404) throw e;
    return { doc: {}, source: "none", revision: null };
  }
}

// Errors of one save: at the field in the form saved; those whose field is in another form
// of the page (a bridge port's address, found by the mode's save) are marked there too.
function showSaveErrors(form, err) {
  showErrors(form, err);
  const others = $$("form.net-form").filter((f) => f !== form);
  for (const other of others) clearErrors(other);
  for (const e of err.errors || []) {
    if (!e.path || fieldFor(form, e.path)) continue;
    for (const other of others) {
      const el = fieldFor(other, e.path);
      if (!el) continue;
      el.setAttribute("aria-invalid", "true");
      el.after(h("div", { class: "field-error", role: "alert" }, e.message));
      break;
    }
  }
}

function reportSaved(r, what) {
  for (const w of r?.warnings || []) toast(`warning: ${w}`, "bad", 8000);
  toast(`${what} saved to the draft.`);
}

// -- inputs that carry the path the API names in its errors -----------------------------------

// spec: {key, label, type: text|list|number|select, options, placeholder, optional, required}
function field(spec, value, path) {
  const attrs = { "data-path": path, "data-key": spec.key, required: !!spec.required, spellcheck: "false" };
  let control;
  if (spec.type === "select") {
    control = h("select", attrs, spec.options.map((o) => h("option", { value: o, selected: o === value }, o)));
  } else {
    const text = spec.type === "list" ? (value || []).join(", ") : (value ?? "");
    control = h("input", { ...attrs, type: spec.type === "number" ? "number" : "text", value: String(text), placeholder: spec.placeholder || "" });
  }
  return h("label", { class: spec.key === "description" || spec.key === "allow_in" ? "wide" : null }, spec.label, " ", control);
}

// The value of one field back into `out` (deleted when empty and optional).
function readField(root, spec, path, out) {
  const el = root.querySelector(`[data-path="${path}"]`);
  if (!el) return;
  let v;
  if (spec.type === "list") v = parseList(el.value);
  else if (spec.type === "number") v = el.value === "" ? null : Number(el.value);
  else v = el.value.trim();
  const empty = v === null || v === "" || (Array.isArray(v) && !v.length);
  if (empty && spec.optional) delete out[spec.key];
  else out[spec.key] = v;
}

function removeBtn(label, onclick) {
  return h("button", { type: "button", class: "btn small danger needs-admin", "aria-label": label, onclick }, "Remove");
}

// -- interfaces: a card each, with its routes, DHCP and VLANs ---------------------------------

const ROLES = ["it", "ot", "mgmt"];
const COMMON = [
  { key: "addresses", label: "addresses", type: "list", placeholder: "e.g. 10.10.0.1/24" },
  { key: "gateway", label: "gateway", optional: true, placeholder: "e.g. 10.10.0.254" },
  { key: "mtu", label: "MTU", type: "number", optional: true, placeholder: "empty: the NIC's" },
  { key: "allow_in", label: "allow in", type: "list", optional: true, placeholder: "empty: the role's default" },
  { key: "description", label: "description", optional: true },
];
const NIC_FIELDS = [
  { key: "name", label: "name", required: true, placeholder: "e.g. it0" },
  { key: "role", label: "role", type: "select", options: ROLES, required: true },
  { key: "mac", label: "MAC", optional: true, placeholder: "e.g. 02:a0:00:00:01:01" },
  ...COMMON,
];
const VLAN_FIELDS = [
  { key: "id", label: "VLAN id", type: "number", required: true, placeholder: "e.g. 30" },
  { key: "name", label: "name", optional: true, placeholder: "empty: <interface>.<id>" },
  { key: "role", label: "role", type: "select", options: ROLES, required: true },
  ...COMMON,
];
const ROUTE_FIELDS = [
  { key: "to", label: "to network", required: true, placeholder: "e.g. 192.168.60.0/24" },
  { key: "via", label: "via router", required: true, placeholder: "e.g. 192.168.50.254" },
];

const ifForm = $("#if-form");
const ifRoot = $("#if-rows");
let ifaces = []; // the interfaces as loaded, with the edits read back before each repaint

function dhcpBox(link, path, role) {
  return h(
    "div",
    { class: "net-dhcp" },
    h("label", { class: "check" }, h("input", { type: "checkbox", "data-path": `${path}.dhcp`, "data-key": "dhcp", checked: !!link.dhcp }), " DHCP: take an IPv4 address, default route and DNS servers from a DHCP server on this link"),
    h("div", { class: "hint" }, role === "ot" ? "On the OT side only when asked for: its address may then change (saving warns)." : "Static addresses may stay beside the lease; an IPv4 gateway may not (the lease gives it)."),
  );
}

function routeRows(routes, path, onChange) {
  return h(
    "div",
    { class: "net-sub", "data-path": `${path}.routes`, tabindex: "-1" },
    h("h3", null, "Routes"),
    routes.length ? routes.map((r, j) => h("div", { class: "net-row route", "data-route": j }, ROUTE_FIELDS.map((f) => field(f, r[f.key], `${path}.routes[${j}].${f.key}`)), removeBtn(`Remove route ${j + 1}`, () => onChange((list) => list.splice(j, 1))))) : h("p", { class: "small muted" }, "no static routes"),
    h("button", { type: "button", class: "btn small needs-admin add-route", onclick: () => onChange((list) => list.push({})) }, "Add route"),
  );
}

function vlanCard(vlan, path, i, k, parentName) {
  const edit = (fn) => {
    ifaces = collectIfaces();
    const v = ifaces[i].vlans[k];
    v.routes = v.routes || [];
    fn(v.routes);
    paintIfaces();
  };
  const fields = VLAN_FIELDS.map((f) => (f.key === "name" ? { ...f, placeholder: `empty: ${parentName || "<interface>"}.${vlan.id ?? "<id>"}` } : f));
  return h(
    "div",
    { class: "net-vlan", "data-vlan": k, "data-path": path, tabindex: "-1" },
    h("div", { class: "net-head" }, h("strong", null, vlan.name || (vlan.id ? `VLAN ${vlan.id}` : "new VLAN")), h("span", { class: "spacer" }), removeBtn(`Remove VLAN ${k + 1} of interface ${i + 1}`, () => editVlans(i, (list) => list.splice(k, 1)))),
    h("div", { class: "net-fields" }, fields.map((f) => field(f, vlan[f.key], `${path}.${f.key}`))),
    dhcpBox(vlan, path, vlan.role),
    routeRows(vlan.routes || [], path, edit),
  );
}

function editVlans(i, fn) {
  ifaces = collectIfaces();
  ifaces[i].vlans = ifaces[i].vlans || [];
  fn(ifaces[i].vlans);
  paintIfaces();
}

function ifCard(iface, i) {
  const path = `interfaces[${i}]`;
  const editRoutes = (fn) => {
    ifaces = collectIfaces();
    ifaces[i].routes = ifaces[i].routes || [];
    fn(ifaces[i].routes);
    paintIfaces();
  };
  const vlans = iface.vlans || [];
  return h(
    "div",
    { class: "net-card", "data-iface": i, "data-path": path, tabindex: "-1" },
    h("div", { class: "net-head" }, h("strong", null, iface.name || "new interface"), iface.role ? pill("info", iface.role) : "", h("span", { class: "spacer" }), removeBtn(`Remove interface ${i + 1}`, () => {
      ifaces = collectIfaces();
      ifaces.splice(i, 1);
      paintIfaces();
    })),
    h("div", { class: "net-fields" }, NIC_FIELDS.map((f) => field(f, iface[f.key], `${path}.${f.key}`))),
    dhcpBox(iface, path, iface.role),
    routeRows(iface.routes || [], path, editRoutes),
    h(
      "div",
      { class: "net-sub", "data-path": `${path}.vlans`, tabindex: "-1" },
      h("h3", null, "VLANs"),
      vlans.length ? vlans.map((v, k) => vlanCard(v, `${path}.vlans[${k}]`, i, k, iface.name)) : h("p", { class: "small muted" }, "no VLANs on this interface"),
      h("button", { type: "button", class: "btn small needs-admin add-vlan", onclick: () => editVlans(i, (list) => list.push({ role: ifaces[i].role || "ot", addresses: [] })) }, "Add VLAN"),
    ),
  );
}

function paintIfaces() {
  clear(
    ifRoot,
    ifaces.length ? ifaces.map(ifCard) : h("p", { class: "muted" }, "no interfaces"),
    h("div", { class: "actions left" }, h("button", { type: "button", class: "btn small needs-admin", id: "add-iface", onclick: () => addIface({ role: "it", addresses: [] }) }, "Add interface")),
  );
  markRequired(ifRoot);
  paintBridgePorts(); // the bridge ports are the it and ot interfaces of this editor
}

// One link (NIC or VLAN) read back from its inputs: the keys the form does not show kept.
function readLink(orig, fields, path) {
  const out = { ...orig };
  for (const f of fields) readField(ifRoot, f, `${path}.${f.key}`, out);
  const dhcp = ifRoot.querySelector(`[data-path="${path}.dhcp"]`);
  if (dhcp && dhcp.checked) out.dhcp = true;
  else delete out.dhcp;
  const routes = (orig.routes || []).map((r, j) => {
    const route = { ...r };
    for (const f of ROUTE_FIELDS) readField(ifRoot, f, `${path}.routes[${j}].${f.key}`, route);
    return route;
  });
  if (routes.length) out.routes = routes;
  else delete out.routes;
  return out;
}

function collectIfaces() {
  return ifaces.map((orig, i) => {
    const path = `interfaces[${i}]`;
    const out = readLink(orig, NIC_FIELDS, path);
    const vlans = (orig.vlans || []).map((v, k) => readLink(v, VLAN_FIELDS, `${path}.vlans[${k}]`));
    if (vlans.length) out.vlans = vlans;
    else delete out.vlans;
    return out;
  });
}

function addIface(iface) {
  ifaces = collectIfaces();
  ifaces.push(iface);
  paintIfaces();
  const first = ifRoot.querySelector(".net-card:last-of-type input");
  if (first) first.focus();
}

function setIfaces(list, source) {
  ifaces = (list || []).map((r) => ({ ...r }));
  paintIfaces();
  $("#source-name").textContent = source === "draft" ? "draft" : source === "running" ? "running configuration (saving creates a draft)" : "configuration (none yet)";
}

ifForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (checkRequired(ifForm)) return;
  $("#save").disabled = true;
  try {
    const r = await saveSection("interfaces", collectIfaces());
    reportSaved(r, "Interfaces");
    await load(["interfaces"]);
  } catch (e) {
    showSaveErrors(ifForm, e);
  } finally {
    $("#save").disabled = false;
  }
});

// -- the mode: routed, or a transparent bridge ------------------------------------------------

const modeForm = $("#mode-form");
let bridge = null; // the bridge section as loaded (null: routed)
let portsChecked = null; // the ports ticked now (null: as the section says)

function bridgeOn() {
  return modeForm.elements.mode.value === "bridge";
}

function paintBridgePorts() {
  const box = $("#bridge-ports");
  const sides = collectIfaces().filter((i) => i.role === "it" || i.role === "ot");
  const names = sides.map((i) => i.name).filter(Boolean);
  const listed = bridge?.ports ?? null;
  const ticked = portsChecked ?? (listed === null ? names : listed);
  // a port the section names that the editor has not (renamed, removed) stays, ticked: the
  // check says "no interface is named ..."
  const all = [...names, ...ticked.filter((p) => !names.includes(p))];
  clear(
    box,
    h("div", { class: "small muted" }, "Bridge ports:"),
    all.length
      ? all.map((name) => {
          const iface = sides.find((i) => i.name === name);
          return h("label", { class: "check" }, h("input", { type: "checkbox", name: "port", value: name, checked: ticked.includes(name), onchange: () => (portsChecked = $$("input[name=port]:checked", box).map((x) => x.value)) }), ` ${name}`, iface ? h("span", { class: "hint" }, ` (${iface.role})`) : h("span", { class: "hint" }, " (no such interface)"));
        })
      : h("span", { class: "small muted" }, "no it or ot interfaces"),
  );
}

function paintMode() {
  $("#bridge-opts").hidden = !bridgeOn();
  if (bridgeOn()) paintBridgePorts();
}

function setMode(value) {
  bridge = value ?? null;
  portsChecked = null;
  const els = modeForm.elements;
  els.mode.value = bridge ? "bridge" : "routed";
  els.lldp.checked = !!bridge?.pass_l2?.lldp;
  els.stp.checked = !!bridge?.pass_l2?.stp;
  els.bridge_name.value = bridge?.name && bridge.name !== "br0" ? bridge.name : "";
  els.bridge_description.value = bridge?.description || "";
  paintMode();
}

function collectBridge() {
  if (!bridgeOn()) return null;
  const els = modeForm.elements;
  const out = { ...(bridge || {}) };
  const ports = $$("input[name=port]", modeForm);
  const ticked = ports.filter((x) => x.checked).map((x) => x.value);
  // unset ports mean every it and ot interface: kept so while every one is ticked
  if (bridge?.ports == null && ticked.length === ports.length && ports.length) delete out.ports;
  else out.ports = ticked;
  const name = els.bridge_name.value.trim();
  if (name) out.name = name;
  else delete out.name;
  const description = els.bridge_description.value.trim();
  if (description) out.description = description;
  else delete out.description;
  out.pass_l2 = { ...(bridge?.pass_l2 || {}), lldp: els.lldp.checked, stp: els.stp.checked };
  return out;
}

for (const radio of modeForm.elements.mode) radio.addEventListener("change", paintMode);

modeForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  clearErrors(modeForm);
  $("#mode-save").disabled = true;
  const value = collectBridge();
  try {
    const r = await saveSection("bridge", value);
    reportSaved(r, value ? "Transparent bridge mode" : "Routed mode");
    await load(["bridge"]);
  } catch (e) {
    showSaveErrors(modeForm, e);
  } finally {
    $("#mode-save").disabled = false;
  }
});

// -- DNS and time: lists of servers, one input each -------------------------------------------

// A list of strings, an input per item with the path `<prefix>[i]` (errors say "time.ntp[2]").
function stringList(container, { prefix, label, placeholder, max, addLabel }) {
  let items = [];
  const read = () => $$("input[data-item]", container).map((el) => el.value.trim());
  function paint() {
    clear(
      container,
      items.length
        ? items.map((v, i) =>
            h(
              "div",
              { class: "net-row" },
              h("label", null, `${label} ${i + 1}`, " ", h("input", { "data-path": `${prefix}[${i}]`, "data-item": i, value: v, placeholder: i === 0 ? placeholder : "", spellcheck: "false" })),
              removeBtn(`Remove ${label} ${i + 1}`, () => {
                items = read();
                items.splice(i, 1);
                paint();
              }),
            ),
          )
        : h("p", { class: "small muted" }, "none"),
      h(
        "button",
        {
          type: "button",
          class: "btn small needs-admin",
          onclick: () => {
            items = read();
            if (items.length >= max) {
              toast(`at most ${max}`, "bad");
              return;
            }
            items.push("");
            paint();
            const inputs = $$("input[data-item]", container);
            inputs[inputs.length - 1].focus();
          },
        },
        addLabel,
      ),
    );
  }
  return {
    set(list) {
      items = [...(list || [])];
      paint();
    },
    // the items, empty ones dropped (and repainted without them, so that an error's index
    // is the index of the input it names)
    get() {
      const before = read();
      items = before.filter(Boolean);
      if (items.length !== before.length) paint();
      return [...items];
    },
  };
}

const dnsForm = $("#dns-form");
const dnsServers = stringList($("#dns-servers"), { prefix: "dns.servers", label: "server", placeholder: "e.g. 10.10.0.53", max: 3, addLabel: "Add DNS server" });
const dnsSearch = stringList($("#dns-search"), { prefix: "dns.search", label: "domain", placeholder: "e.g. plant.example", max: 6, addLabel: "Add search domain" });
let dns = {};

function setDns(value) {
  dns = value || {};
  dnsServers.set(dns.servers);
  dnsSearch.set(dns.search);
}

dnsForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  clearErrors(dnsForm);
  $("#dns-save").disabled = true;
  try {
    const r = await saveSection("dns", { ...dns, servers: dnsServers.get(), search: dnsSearch.get() });
    reportSaved(r, "DNS");
    await load(["dns"]);
  } catch (e) {
    showSaveErrors(dnsForm, e);
  } finally {
    $("#dns-save").disabled = false;
  }
});

const timeForm = $("#time-form");
const ntpServers = stringList($("#ntp-servers"), { prefix: "time.ntp", label: "server", placeholder: "e.g. ntp.plant.example", max: 8, addLabel: "Add NTP server" });
let time = {};

function setTime(value) {
  time = value || {};
  ntpServers.set(time.ntp);
  const after = time.unsynchronised_after_minutes;
  timeForm.elements.unsync.value = after === undefined || after === 60 ? "" : String(after);
}

timeForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  clearErrors(timeForm);
  $("#time-save").disabled = true;
  const body = { ...time, ntp: ntpServers.get() };
  const after = timeForm.elements.unsync.value.trim();
  if (after === "") delete body.unsynchronised_after_minutes;
  else body.unsynchronised_after_minutes = Number(after);
  try {
    const r = await saveSection("time", body);
    reportSaved(r, "Time");
    await load(["time"]);
  } catch (e) {
    showSaveErrors(timeForm, e);
  } finally {
    $("#time-save").disabled = false;
  }
});

// -- loading: every panel, or the ones just saved (the others keep their edits) -------------

const PANELS = {
  interfaces: { form: ifForm, set: (doc, source) => setIfaces(doc.interfaces, source) },
  bridge: { form: modeForm, set: (doc) => setMode(doc.bridge) },
  dns: { form: dnsForm, set: (doc) => setDns(doc.dns) },
  time: { form: timeForm, set: (doc) => setTime(doc.time) },
};

async function load(which = Object.keys(PANELS)) {
  const { doc, source } = await loadDocument();
  for (const name of which) {
    clearErrors(PANELS[name].form);
    PANELS[name].set(doc, source);
  }
}

function reloadOne(button, name) {
  $(button).addEventListener("click", () => load([name]).catch((e) => showErrors(PANELS[name].form, e)));
}
reloadOne("#reload", "interfaces");
reloadOne("#mode-reload", "bridge");
reloadOne("#dns-reload", "dns");
reloadOne("#time-reload", "time");
load().catch((e) => showErrors(ifForm, e));
sessionReady.then(() => {
  for (const id of ["#editable", "#mode-edit", "#dns-edit", "#time-edit"]) $(id).disabled = !can("admin");
});

// -- the links now, with the lease of each DHCP link -------------------------------------------

function up(l) {
  if (typeof l.up === "boolean") return l.up && l.present !== false;
  return String(l.oper || l.state || "").toUpperCase() === "UP";
}

function lease(l) {
  const d = l.dhcp;
  if (!d || !d.bound) return "";
  const expires = d.expires_at ? fmtAgo(d.expires_at).replace(/^in /, "expires in ").replace(/ ago$/, " ago: expired") : "";
  return h("span", { class: "lease" }, h("code", null, d.address || "?"), d.server ? ` from ${d.server}` : "", expires ? `, ${expires}` : "", d.router ? h("span", { class: "hint" }, ` (router ${d.router})`) : "");
}

onStatus((st) => {
  const links = listOf(st.links, "links");
  const columns = [
    { label: "name", get: (l) => h("strong", null, l.name) },
    { label: "role", get: (l) => l.role },
    { label: "state", get: (l) => (l.present === false ? pill("bad", "absent") : pill(up(l) ? "ok" : "bad", up(l) ? "up" : "down")) },
    { label: "MAC", get: (l) => h("code", null, l.mac || "") },
    { label: "addresses", get: (l) => h("code", null, (l.addresses || []).join(" ")) },
  ];
  // a DHCP lease where there is one; no column while no link holds any
  if (links.some((l) => l.dhcp && l.dhcp.bound)) columns.push({ label: "DHCP lease", get: lease });
  clear($("#links-now"), table(columns, links, { empty: "the net role reports no links", rowAttrs: (l) => ({ "data-link": l.name }) }));
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
  return collectIfaces().some((r) => (r.mac || "").toLowerCase() === (mac || "").toLowerCase());
}

function useAsInterface(p) {
  addIface({ name: p.name, role: "it", mac: p.mac, addresses: [] });
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
