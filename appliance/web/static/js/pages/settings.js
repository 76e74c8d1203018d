// Unit settings: identity, syslog servers, the fleet heartbeat, webhooks, LEDs and button,
// history, the OPC UA server and the web interface, one form per section of the document.
// Each form saves its own section (one PUT /api/config/draft/<section>: the unit validates
// the whole document, so a refusal saves nothing) and keeps the keys it does not show; the
// unit's errors land at the input whose data-path they name ("syslog[1].port").

import { $, $$, api, can, checkRequired, clearErrors, h, markRequired, parseList, revisionFacts, showErrors, toast } from "../lib.js";
import { loadSection, saveSection } from "../section.js";
import { sessionReady } from "../shell.js";

const PEM_MAX = 65536; // the model's limit for PEM text

// -- fields -------------------------------------------------------------------------------
// spec: {key, label, type: text|textarea|pem|secret|number|select|check|list|multi|pin,
//        required, options: [[value, text]], placeholder (text or fn(obj)), hint, wide,
//        empty: "" (keep "") | "omit" (the default applies) | "null",
//        show: fn(obj) (hidden when false), drop (a hidden field's key is left out)}

function flag(el, message) {
  el.setAttribute("aria-invalid", "true");
  el.after(h("div", { class: "field-error", role: "alert" }, message));
}

function placeholderOf(spec, obj) {
  return typeof spec.placeholder === "function" ? spec.placeholder(obj) : spec.placeholder || "";
}

function controlFor(spec, path, value) {
  const common = { "data-path": path, "data-key": spec.key, required: !!spec.required };
  switch (spec.type) {
    case "textarea":
    case "pem":
      return h("textarea", { ...common, rows: spec.type === "pem" ? 4 : 3, class: spec.type === "pem" ? "pem" : null, spellcheck: "false", placeholder: placeholderOf(spec, {}), value: value ?? "" });
    case "secret":
      return h("input", { ...common, type: "password", autocomplete: "new-password", spellcheck: "false", placeholder: placeholderOf(spec, {}), value: value ?? "" });
    case "number":
      return h("input", { ...common, type: "number", step: spec.integer ? "1" : "any", inputmode: spec.integer ? "numeric" : "decimal", placeholder: placeholderOf(spec, {}), value: value === null || value === undefined ? "" : String(value) });
    case "select":
      return h("select", common, spec.options.map(([v, text]) => h("option", { value: v, selected: v === (value ?? spec.default ?? spec.options[0][0]) }, text)));
    case "check":
      return h("input", { ...common, type: "checkbox", checked: value === undefined ? !!spec.default : !!value });
    case "multi":
      return h(
        "span",
        { class: "multi", "data-path": path, "data-key": spec.key },
        spec.options.map(([v, text]) => h("label", { class: "check" }, h("input", { type: "checkbox", value: v, checked: (value || []).includes(v) }), text)),
      );
    case "list":
      return h("input", { ...common, type: "text", spellcheck: "false", placeholder: placeholderOf(spec, {}), value: (value || []).join(", ") });
    default:
      return h("input", { ...common, type: "text", spellcheck: "false", placeholder: placeholderOf(spec, {}), value: value === null || value === undefined ? "" : String(value) });
  }
}

// A PEM text box takes a file too: its text is read here, nothing is uploaded.
function pemPicker(textarea, label) {
  const pick = h("input", { type: "file", accept: ".pem,.crt,.cer,.key,text/plain", class: "pem-file", "aria-label": `${label}: read from a file` });
  pick.addEventListener("change", async () => {
    const file = pick.files && pick.files[0];
    if (!file) return;
    textarea.parentElement.querySelectorAll(".field-error").forEach((e) => e.remove());
    if (file.size > PEM_MAX) {
      flag(textarea, `${file.name} is larger than 64 kB: not a certificate or key`);
    } else {
      textarea.value = await file.text();
      textarea.removeAttribute("aria-invalid");
      textarea.dispatchEvent(new Event("input", { bubbles: true }));
    }
    pick.value = "";
  });
  return h("label", { class: "pick small" }, "or read it from a file: ", pick);
}

function fieldFor(spec, path, value) {
  const control = controlFor(spec, path, value);
  const extras = [];
  let label;
  if (spec.type === "check") {
    label = h("label", { class: "check" }, control, spec.label);
  } else if (spec.type === "multi") {
    label = h("div", { class: "multi-field" }, h("div", { class: "label" }, spec.label), control);
  } else {
    label = h("label", null, spec.label, control);
  }
  if (spec.type === "pem") extras.push(pemPicker(control, spec.label));
  if (spec.type === "secret") {
    extras.push(
      h(
        "label",
        { class: "check small reveal needs-admin" },
        h("input", { type: "checkbox", onchange: (ev) => (control.type = ev.target.checked ? "text" : "password") }),
        "show",
      ),
    );
  }
  const wide = spec.wide || spec.type === "textarea" || spec.type === "pem";
  const wrap = h("div", { class: `field${wide ? " wide" : ""}`, "data-field": spec.key }, label, extras, spec.hint ? h("div", { class: "hint" }, spec.hint) : null);
  return { control, wrap };
}

function readOne(spec, control, problems) {
  const empty = () => (spec.empty === "omit" ? undefined : spec.empty === "null" ? null : "");
  switch (spec.type) {
    case "check":
      return control.checked;
    case "multi":
      return $$("input:checked", control).map((el) => el.value);
    case "list":
      return parseList(control.value);
    case "select":
      return control.value;
    case "number": {
      if (control.validity && control.validity.badInput) {
        problems.push([control, "must be a number"]);
        return undefined;
      }
      return control.value.trim() === "" ? empty() : Number(control.value);
    }
    case "pin": {
      const v = control.value.trim();
      if (v === "") return empty();
      return /^\d+$/.test(v) ? Number(v) : v; // a GPIO number, or a name such as GPIO17
    }
    case "textarea":
    case "pem":
      return control.value.trim() === "" ? empty() : control.value.replace(/\r\n/g, "\n");
    default: {
      const v = control.value.trim();
      return v === "" ? empty() : v;
    }
  }
}

// One object's fields under `prefix` ("fleet", "syslog[2]"): read() gives the object with
// the keys the form does not show kept as they were.
function group(specs, prefix, value) {
  const orig = value && typeof value === "object" ? { ...value } : {};
  const fields = specs.map((spec) => ({ spec, ...fieldFor(spec, `${prefix}.${spec.key}`, orig[spec.key]) }));
  const el = h("div", { class: "fields" }, fields.map((f) => f.wrap));

  function read() {
    const out = { ...orig };
    const problems = [];
    for (const { spec, control, wrap } of fields) {
      if (wrap.hidden && spec.drop) {
        delete out[spec.key];
        continue;
      }
      const v = readOne(spec, control, problems);
      if (v === undefined) delete out[spec.key];
      else out[spec.key] = v;
    }
    return { value: out, problems };
  }

  function refresh() {
    const now = read().value;
    for (const { spec, control, wrap } of fields) {
      if (spec.show) wrap.hidden = !spec.show(now);
      if (typeof spec.placeholder === "function") control.placeholder = spec.placeholder(now);
    }
  }

  el.addEventListener("input", refresh);
  el.addEventListener("change", refresh);
  refresh();
  return { el, read, refresh, control: (key) => fields.find((f) => f.spec.key === key)?.control };
}

// -- the sections ---------------------------------------------------------------------------

const UNIT = [
  { key: "name", label: "unit name", required: true, placeholder: "e.g. line3-gate", hint: "in the header, the page titles, the heartbeat and syslog lines" },
  { key: "site", label: "site", placeholder: "e.g. Plant 1, line 3 cabinet" },
  { key: "description", label: "description", type: "textarea", placeholder: "e.g. who looks after it, where the cabinet key is" },
];

const SEVERITIES = ["debug", "info", "notice", "warning", "error", "critical"].map((s) => [s, s]);
const FACILITIES = Array.from({ length: 8 }, (_, n) => [`local${n}`, `local${n}`]);

const SYSLOG = [
  { key: "host", label: "host", required: true, placeholder: "e.g. siem.plant.example" },
  { key: "transport", label: "transport", type: "select", options: [["udp", "UDP"], ["tcp", "TCP"], ["tls", "TLS (encrypted)"]] },
  { key: "port", label: "port", type: "number", integer: true, empty: "omit", placeholder: (o) => `empty: ${o.transport === "tls" ? 6514 : 514}` },
  { key: "min_severity", label: "from severity", type: "select", options: SEVERITIES, default: "info", hint: "events below this are not sent" },
  { key: "facility", label: "facility", type: "select", options: FACILITIES, default: "local0" },
  { key: "ca_cert", label: "CA certificate to trust (PEM text or a file path on the unit)", type: "pem", empty: "omit", drop: true, placeholder: "empty: the system's CAs", show: (o) => o.transport === "tls" },
];

const FLEET = [
  { key: "url", label: "heartbeat URL", required: true, wide: true, placeholder: "e.g. https://fleet.example/api/v1/heartbeat", hint: "https:// only: the heartbeat carries the unit's token" },
  { key: "interval", label: "every (seconds)", type: "number", empty: "omit", placeholder: "empty: 60" },
  { key: "timeout", label: "timeout (seconds)", type: "number", empty: "omit", placeholder: "empty: 10" },
  { key: "outbox_max", label: "heartbeats kept while offline", type: "number", integer: true, empty: "omit", placeholder: "empty: 10000" },
  { key: "token", label: "token", type: "secret", empty: "omit", placeholder: "empty: none (a client certificate instead)", hint: "secret: only admins see it" },
  { key: "ca_cert", label: "CA certificate to trust (PEM text or a file path on the unit)", type: "pem", empty: "omit", placeholder: "empty: the system's CAs" },
  { key: "client_cert", label: "client certificate (PEM text or a file path)", type: "pem", empty: "omit", placeholder: "empty: none (the token instead)" },
  { key: "client_key", label: "client key (PEM text or a file path)", type: "pem", empty: "omit", placeholder: "empty: none", hint: "secret: only admins see it" },
];

const WEBHOOK = [
  { key: "url", label: "URL", required: true, wide: true, placeholder: "e.g. https://hooks.plant.example/alarms", hint: "http:// only without a token or credentials in the URL" },
  { key: "token", label: "bearer token", type: "secret", empty: "omit", placeholder: "empty: none", hint: "secret, sent over https:// only" },
  { key: "timeout", label: "timeout (seconds)", type: "number", empty: "omit", placeholder: "empty: 10" },
  { key: "ca_cert", label: "CA certificate to trust (PEM text or a file path on the unit)", type: "pem", empty: "omit", placeholder: "empty: the system's CAs", show: (o) => String(o.url || "").toLowerCase().startsWith("https://") },
];

const LEDS = [
  { key: "backend", label: "LEDs driven by", type: "select", options: [["none", "none (no LEDs)"], ["gpio", "GPIO pins"], ["sysfs", "/sys/class/leds"]] },
  { key: "active_high", label: "a pin at high lights the LED", type: "check", default: true, show: (o) => o.backend === "gpio" },
  { key: "sysfs_root", label: "LED directory", empty: "omit", placeholder: "empty: /sys/class/leds", show: (o) => o.backend === "sysfs" },
];
const LED_NAMES = [["status", "status (the unit's health)"], ["link", "link (the network links)"]];

const BUTTON = [
  { key: "pin", label: "GPIO pin", type: "pin", required: true, placeholder: "e.g. 22 or GPIO22" },
  { key: "pull_up", label: "pull-up (pressed connects to ground)", type: "check", default: true },
  { key: "factory_reset", label: "holding it 10 s resets to factory state", type: "check", default: true },
];

const HISTORY = [
  { key: "retention_days", label: "tag values kept (days)", type: "number", empty: "omit", placeholder: "empty: 90" },
  { key: "max_mb", label: "at most (MB)", type: "number", integer: true, empty: "omit", placeholder: "empty: 1024", hint: "whichever limit comes first" },
  { key: "events_days", label: "events kept (days)", type: "number", empty: "omit", placeholder: "empty: 365" },
  { key: "events_max", label: "events kept at most", type: "number", integer: true, empty: "omit", placeholder: "empty: 500000" },
  { key: "audit_days", label: "audit log never pruned before (days)", type: "number", empty: "omit", placeholder: "empty: 365" },
  { key: "audit_max", label: "audit rows kept at most", type: "number", integer: true, empty: "omit", placeholder: "empty: 200000", hint: "beyond the days above" },
  { key: "flush_interval", label: "write every (seconds)", type: "number", empty: "omit", placeholder: "empty: 1" },
  { key: "flush_samples", label: "or after (samples)", type: "number", integer: true, empty: "omit", placeholder: "empty: 500" },
];

const OPCUA = [
  { key: "enabled", label: "offer the OPC UA server on the IT side", type: "check", default: true },
  { key: "port", label: "port", type: "number", integer: true, empty: "omit", placeholder: "empty: 4840" },
  { key: "allow_anonymous", label: "anonymous clients may read", type: "check" },
  {
    key: "security",
    label: "endpoints offered",
    type: "multi",
    wide: true,
    options: [
      ["Basic256Sha256-SignAndEncrypt", "signed and encrypted"],
      ["Basic256Sha256-Sign", "signed"],
      ["None", "neither signed nor encrypted"],
    ],
    hint: "passwords are always sent encrypted; values are written only over signed and encrypted",
  },
];

const WEB = [
  { key: "listen_it", label: "answer on the IT interface too (the service port always)", type: "check", wide: true },
  { key: "https_port", label: "HTTPS port", type: "number", integer: true, empty: "omit", placeholder: "empty: 443" },
  { key: "http_port", label: "HTTP port (redirects to HTTPS)", type: "number", integer: true, empty: "null", placeholder: "empty: off" },
  { key: "session_idle_minutes", label: "log out after idle (minutes)", type: "number", integer: true, empty: "omit", placeholder: "empty: 30" },
  { key: "session_max_hours", label: "a session lasts at most (hours)", type: "number", integer: true, empty: "omit", placeholder: "empty: 12" },
  { key: "metrics_allow", label: "may read /metrics without a token", type: "list", wide: true, placeholder: "e.g. 10.10.0.20, 10.10.5.0/24" },
  { key: "banner", label: "login banner", type: "textarea", placeholder: "e.g. Authorised plant staff only. Activity is logged." },
];

// -- panels -------------------------------------------------------------------------------
// Each: {section, name, render(value), read() -> {value, problems}}

function objectPanel(section, name, specs) {
  let g = null;
  return {
    section,
    name,
    render(value, body) {
      g = group(specs, section, value);
      body.replaceChildren(g.el);
    },
    read: () => g.read(),
  };
}

function listPanel(section, name, specs, { item, empty, addLabel, summary }) {
  let groups = [];
  let box = null;
  function paint(list) {
    groups = [];
    box.replaceChildren();
    list.forEach((v) => addItem(v));
    if (!list.length) box.append(h("p", { class: "muted small empty" }, empty));
  }
  function addItem(v) {
    const i = groups.length;
    const g = group(specs, `${section}[${i}]`, v);
    groups.push(g);
    box.querySelector(".empty")?.remove();
    const said = h("span", { class: "muted small summary" });
    const say = () => (said.textContent = summary ? summary(g.read().value) : "");
    g.el.addEventListener("input", say);
    g.el.addEventListener("change", say);
    say();
    const head = h(
      "div",
      { class: "item-head" },
      h("strong", null, `${item} ${i + 1}`),
      said,
      h("span", { class: "spacer" }),
      h("button", { type: "button", class: "btn small danger needs-admin", "aria-label": `Remove ${item.toLowerCase()} ${i + 1}`, onclick: () => removeAt(i) }, "Remove"),
    );
    box.append(h("div", { class: "item", "data-item": String(i) }, head, g.el));
    markRequired(box);
    return g;
  }
  function removeAt(i) {
    const list = groups.map((g) => g.read().value);
    list.splice(i, 1);
    paint(list);
  }
  return {
    section,
    name,
    render(value, body) {
      box = h("div", { class: "items" });
      const add = h(
        "button",
        {
          type: "button",
          class: "btn small needs-admin add",
          onclick: () => {
            const g = addItem({});
            g.el.querySelector("input, select, textarea")?.focus();
          },
        },
        addLabel,
      );
      body.replaceChildren(box, h("div", { class: "actions left" }, add));
      paint(Array.isArray(value) ? value : []);
    },
    read() {
      const problems = [];
      const value = groups.map((g) => {
        const r = g.read();
        problems.push(...r.problems);
        return r.value;
      });
      return { value, problems };
    },
  };
}

// Fleet: off is the section null; the fields keep their text while it is switched off.
function fleetPanel() {
  let g = null;
  let on = null;
  return {
    section: "fleet",
    name: "Fleet",
    render(value, body) {
      on = h("input", { type: "checkbox", name: "fleet-on", "data-path": "fleet", checked: !!value });
      g = group(FLEET, "fleet", value || {});
      const fields = h("div", { class: "fleet-fields", hidden: !value }, g.el);
      on.addEventListener("change", () => {
        fields.hidden = !on.checked;
        if (on.checked) g.el.querySelector("input")?.focus();
      });
      body.replaceChildren(h("label", { class: "check" }, on, "send heartbeats to a fleet"), fields);
    },
    read() {
      if (!on.checked) return { value: null, problems: [] };
      const r = g.read();
      const v = r.value;
      if (!v.token && !v.client_cert) r.problems.push([g.control("token"), "give a token, or a client certificate and its key"]);
      if (v.client_cert && !v.client_key) r.problems.push([g.control("client_key"), "the client certificate needs its key"]);
      if (v.client_key && !v.client_cert) r.problems.push([g.control("client_cert"), "the client key needs its certificate"]);
      return r;
    },
  };
}

// LEDs: the backend, the map (LED -> pin or sysfs name) as rows, the push button on/off.
function ledsPanel() {
  let g = null;
  let orig = {};
  let rows = null;
  let mapBox = null;
  let buttonOn = null;
  let button = null;

  function mapRow(name, target) {
    const pick = h("select", { "data-key": "led", "aria-label": "LED" }, LED_NAMES.map(([v, t]) => h("option", { value: v, selected: v === name }, t)));
    const input = h("input", { type: "text", "data-key": "target", required: true, spellcheck: "false", value: target === undefined || target === null ? "" : String(target) });
    const label = h("label", null, "pin or LED name", input);
    const sync = () => {
      input.dataset.path = `leds.map.${pick.value}`;
      input.placeholder = g.read().value.backend === "sysfs" ? "e.g. led0" : "e.g. 17";
    };
    pick.addEventListener("change", sync);
    const row = h(
      "div",
      { class: "map-row" },
      h("label", null, "LED", pick),
      label,
      h("button", { type: "button", class: "btn small danger needs-admin", "aria-label": "Remove this LED", onclick: () => row.remove() }, "Remove"),
    );
    row.sync = sync;
    sync();
    return row;
  }

  return {
    section: "leds",
    name: "LEDs",
    render(value, body) {
      orig = value && typeof value === "object" ? { ...value } : {};
      g = group(LEDS, "leds", orig);
      rows = h("div", { class: "map-rows" });
      for (const [name, target] of Object.entries(orig.map || {})) rows.append(mapRow(name, target));
      const add = h(
        "button",
        {
          type: "button",
          class: "btn small needs-admin add-led",
          onclick: () => {
            const used = $$("select[data-key=led]", rows).map((s) => s.value);
            const free = LED_NAMES.map(([v]) => v).find((v) => !used.includes(v)) || LED_NAMES[0][0];
            const row = mapRow(free, "");
            rows.append(row);
            markRequired(row);
            row.querySelector("input").focus();
          },
        },
        "Add LED",
      );
      mapBox = h("div", { class: "led-map" }, h("h3", null, "Which LED is which"), rows, h("div", { class: "actions left" }, add));
      const refreshMap = () => {
        mapBox.hidden = g.read().value.backend === "none";
        for (const r of rows.children) r.sync();
      };
      g.el.addEventListener("change", refreshMap);
      buttonOn = h("input", { type: "checkbox", name: "button-on", checked: !!orig.button });
      button = group(BUTTON, "leds.button", orig.button || {});
      const buttonBox = h("div", { class: "button-fields", hidden: !orig.button }, button.el);
      buttonOn.addEventListener("change", () => (buttonBox.hidden = !buttonOn.checked));
      body.replaceChildren(g.el, mapBox, h("h3", null, "Push button"), h("label", { class: "check" }, buttonOn, "the unit has a push button (short press: identify)"), buttonBox);
      refreshMap();
    },
    read() {
      const r = g.read();
      const v = r.value;
      const map = {};
      for (const row of rows.children) {
        const name = row.querySelector("select").value;
        const input = row.querySelector("input");
        const text = input.value.trim();
        if (!text && mapBox.hidden) continue; // no LEDs: an empty row means nothing
        if (name in map) r.problems.push([row.querySelector("select"), `${name} is listed twice`]);
        map[name] = v.backend === "gpio" && /^\d+$/.test(text) ? Number(text) : text;
      }
      v.map = map;
      if (v.backend !== "none" && !Object.keys(map).length) r.problems.push([$("button.add-led", mapBox), "say which LED is on which pin or name"]);
      if (buttonOn.checked) {
        const b = button.read();
        v.button = b.value;
        r.problems.push(...b.problems);
      } else v.button = null;
      return r;
    },
  };
}

// What an item's heading says: where the lines go ("tls://siem.example:6514"), the
// webhook's host only (a URL may carry credentials).
function syslogLabel(o) {
  if (!o.host) return "";
  const transport = o.transport || "udp";
  const port = Number.isInteger(o.port) ? o.port : transport === "tls" ? 6514 : 514;
  return `${transport}://${o.host.includes(":") ? `[${o.host}]` : o.host}:${port}`;
}

function webhookLabel(o) {
  try {
    const u = new URL(o.url);
    return `to ${u.protocol}//${u.host}`;
  } catch {
    return "";
  }
}

const PANELS = [
  objectPanel("unit", "Identity", UNIT),
  listPanel("syslog", "Syslog servers", SYSLOG, { item: "Server", empty: "No syslog server: events stay on the unit.", addLabel: "Add syslog server", summary: syslogLabel }),
  fleetPanel(),
  listPanel("webhooks", "Webhooks", WEBHOOK, { item: "Webhook", empty: "No webhook.", addLabel: "Add webhook", summary: webhookLabel }),
  ledsPanel(),
  objectPanel("history", "History", HISTORY),
  objectPanel("opcua_server", "OPC UA server", OPCUA),
  objectPanel("web", "Web interface", WEB),
];

// -- loading and saving -------------------------------------------------------------------

function formOf(panel) {
  return $(`#${panel.section}-form`);
}

function paint(panel, value) {
  const form = formOf(panel);
  clearErrors(form);
  panel.render(value, $(".body", form));
  markRequired(form);
  secretsAsText(form);
}

// Below admin the unit sends "[redacted]" for a secret: shown as the word, not as dots.
function secretsAsText(root) {
  if (!document.body.dataset.role || can("admin")) return;
  for (const el of $$("input[type=password]", root)) el.type = "text";
}

function note(source, revision) {
  $("#source-note").textContent =
    source === "draft"
      ? `Editing the draft (revision ${revision ?? "?"}).`
      : source === "running"
        ? "No draft yet: showing the running configuration; saving creates a draft."
        : "No configuration yet.";
}

// Every panel from one document: the draft's, else the running one.
async function loadAll() {
  const facts = await revisionFacts();
  let answer = null;
  let source = "none";
  if (facts.draft) {
    answer = await api("GET", "/api/config/draft").catch((e) => (e.status === 404 ? null : Promise.reject(e)));
    if (answer) source = "draft";
  }
  if (!answer && facts.running) {
    answer = await api("GET", "/api/config/running");
    source = "running";
  }
  const doc = (answer && answer.document) || {};
  for (const p of PANELS) paint(p, doc[p.section]);
  note(source, answer?.revision?.id ?? null);
}

async function reload(panel) {
  const { value, source, revision } = await loadSection(panel.section);
  paint(panel, value);
  note(source, revision);
}

async function save(panel) {
  const form = formOf(panel);
  if (checkRequired(form)) return;
  const { value, problems } = panel.read();
  for (const [el, message] of problems) flag(el, message);
  if (problems.length) {
    problems[0][0].focus();
    return;
  }
  const btn = $("button.save", form);
  btn.disabled = true;
  try {
    const r = await saveSection(panel.section, value);
    for (const w of r?.warnings || []) toast(`warning: ${w}`, "bad", 8000);
    toast(`${panel.name} saved to the draft.`);
    await reload(panel);
  } catch (e) {
    showErrors(form, e);
  } finally {
    btn.disabled = false;
  }
}

for (const p of PANELS) {
  const form = formOf(p);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    save(p);
  });
  $("button.discard", form).addEventListener("click", () => reload(p).catch((e) => showErrors(form, e)));
}

loadAll().catch((e) => showErrors(formOf(PANELS[0]), e));
sessionReady.then(() => {
  for (const fs of $$("form.settings > fieldset")) fs.disabled = !can("admin");
  secretsAsText(document);
});
