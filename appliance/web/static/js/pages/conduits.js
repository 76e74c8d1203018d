// Conduits: the running ones with live counters, merged with the draft's (added, changed,
// removed); create/edit/expire/delete write into the draft through the API. The editor
// suggests a name and offers "Save and commit on trial": the draft saved and committed in
// one go, reverting unless confirmed (the pending banner's countdown and Confirm); "Save to
// draft" keeps several changes for one commit.

import {
  $,
  api,
  checkRequired,
  clear,
  clearErrors,
  confirmDialog,
  draftOrNull,
  fmtBytes,
  fmtCount,
  fmtTime,
  fromLocalInput,
  h,
  hostList,
  hostOf,
  listOf,
  parseList,
  pill,
  poll,
  showErrors,
  suggestConduitName,
  table,
  toEpoch,
  toLocalInput,
  toast,
} from "../lib.js";
import { onStatus, refreshStatus, sessionReady } from "../shell.js";

let running = [];
let draft = null; // the draft's conduits, null when there is no draft
let editing = null; // name of the conduit being edited, null for a new one
let nameAuto = false; // the name field follows the suggestion until someone types in it
let devices = null; // configured devices (name, address), asked once for name suggestions
let pendingRev = null; // the revision on trial, if any: another commit waits for it

const dialog = $("#conduit-dialog");
const form = $("#conduit-form");

// Running (with counters) and draft documents may spell the same conduit differently
// (10.10.0.2 vs 10.10.0.2/32, defaults present or not): compare what they mean.
const DEFAULTS = { enabled: true, direction: "one-way", description: "", expires: null };
const LIVE = new Set(["packets", "bytes", "active", "owners", "answering", "unanswered"]);

function norm(c) {
  const out = {};
  for (const k of Object.keys(c).sort()) {
    if (LIVE.has(k) || k.startsWith("_")) continue;
    let v = c[k];
    if (Array.isArray(v)) v = v.map((x) => (typeof x === "string" ? hostOf(x) : x));
    if (v === undefined || v === null || (k in DEFAULTS && v === DEFAULTS[k])) continue;
    if (k === "expires") v = toEpoch(v);
    out[k] = v;
  }
  return JSON.stringify(out);
}

function same(a, b) {
  return norm(a) === norm(b);
}

async function load() {
  const [r, d] = await Promise.all([
    api("GET", "/api/conduits"),
    draftOrNull(),
  ]);
  running = listOf(r, "conduits");
  draft = d && d.document ? d.document.conduits || [] : null;
  render();
}

function rows() {
  const byName = new Map(running.map((c) => [c.name, { ...c, _running: c }]));
  if (!draft) return [...byName.values()].map((c) => ({ ...c, _mark: "" }));
  const out = [];
  const draftNames = new Set(draft.map((c) => c.name));
  for (const c of draft) {
    const r = byName.get(c.name);
    out.push({ ...c, packets: r?.packets, bytes: r?.bytes, active: r?.active, _running: r, _mark: r ? (same(r, c) ? "" : "changed") : "added" });
  }
  for (const r of running) if (!draftNames.has(r.name)) out.push({ ...r, _running: r, _mark: "removed" });
  return out;
}

function stateOf(c) {
  if (c._mark === "removed") return pill("off", "removed in draft");
  if (c._mark === "added") return pill("info", "new in draft");
  const expired = c.expires && toEpoch(c.expires) * 1000 <= Date.now();
  let p;
  if (c.enabled === false) p = pill("off", "disabled");
  else if (expired) p = pill("off", "expired");
  else if (c.active === false) p = pill("off", "inactive");
  else if (c._running?.answering === false)
    p = h("span", { title: `${c._running.unanswered} connection attempts without a reply: the destination is off, unplugged or its address is wrong` }, pill("bad", "not answering"));
  else p = pill("ok", "active");
  return c._mark === "changed" ? h("span", null, p, " ", pill("warn", "changed in draft")) : p;
}

function render() {
  const list = rows();
  const changed = list.filter((c) => c._mark);
  $("#draft-note").hidden = !changed.length;
  $("#draft-summary").textContent = changed.map((c) => `${c.name} ${c._mark}`).join(", ");
  clear(
    $("#conduit-table"),
    table(
      [
        { label: "name", get: (c) => h("strong", { id: c.name }, c.name), cls: "cname" },
        { label: "from → to", get: (c) => h("span", { class: "mono small" }, hostList(c.from).join(", "), " → ", hostList(c.to).join(", ")) },
        { label: "services", get: (c) => h("span", { class: "mono small" }, (c.services || []).join(" "), c.direction === "both" ? " ⇄" : "") },
        { label: "owner / reason", get: (c) => h("span", null, c.owner, h("br"), h("span", { class: "small muted" }, c.reason)) },
        { label: "expires", get: (c) => (c.expires ? fmtTime(c.expires) : h("span", { class: "muted" }, "never")), cls: "nowrap" },
        { label: "state", get: stateOf },
        { label: "packets", get: (c) => (c._running ? fmtCount(c.packets ?? 0) : "–"), cls: "num" },
        { label: "bytes", get: (c) => (c._running ? fmtBytes(c.bytes ?? 0) : "–"), cls: "num" },
        {
          label: "",
          cls: "act needs-admin",
          // Expire now: only a conduit that runs can expire (one new in the draft is deleted)
          get: (c) =>
            c._mark === "removed"
              ? ""
              : [
                  h("button", { type: "button", class: "btn small", "data-edit": c.name, onclick: () => openForm(c) }, "Edit"),
                  c._running ? [" ", h("button", { type: "button", class: "btn small", "data-expire": c.name, onclick: () => expire(c) }, "Expire now")] : "",
                  " ",
                  h("button", { type: "button", class: "btn small danger", "data-delete": c.name, onclick: () => remove(c) }, "Delete"),
                ],
        },
      ],
      list,
      {
        empty: "no conduits: nothing crosses between IT and OT",
        rowAttrs: (c) => ({ class: [c._mark ? `draft-${c._mark}` : "", c.active === false || c.enabled === false ? "inactive" : ""].join(" "), "data-conduit": c.name }),
      },
    ),
  );
}

function openForm(c) {
  editing = c ? c.name : null;
  clearErrors(form);
  form.reset();
  $("#conduit-form-title").textContent = c ? `Edit conduit ${c.name}` : "New conduit";
  const f = form.elements;
  f.name.value = c?.name || "";
  f.owner.value = c?.owner || "";
  f.reason.value = c?.reason || "";
  f.from.value = hostList(c?.from).join(", ");
  f.to.value = hostList(c?.to).join(", ");
  f.services.value = (c?.services || []).join(", ");
  f.direction.value = c?.direction || "one-way";
  f.expires.value = c?.expires ? toLocalInput(c.expires) : "";
  f.enabled.checked = c ? c.enabled !== false : true;
  f.description.value = c?.description || "";
  nameAuto = !c;
  paintBatch();
  dialog.showModal();
  (c ? f.name : f.owner).focus();
  if (!c && devices === null) {
    devices = [];
    api("GET", "/api/devices").then((d) => (devices = listOf(d, "devices")), () => {});
  }
}

// The name follows owner, to and services until it is typed in.
function suggest() {
  if (!nameAuto) return;
  const c = formConduit();
  const taken = [...running, ...(draft || [])].map((x) => x.name);
  form.elements.name.value = suggestConduitName(c, devices || [], taken);
}

// What else the draft holds: a commit from here commits it too.
function paintBatch() {
  const others = rows().filter((c) => c._mark && c.name !== editing);
  const note = $("#conduit-batch");
  note.hidden = !others.length && pendingRev === null;
  const parts = [];
  if (others.length) {
    parts.push(`The draft also holds ${others.map((c) => `${c.name} (${c._mark})`).join(", ")}: "Save and commit" commits them too.`);
  }
  if (pendingRev !== null) parts.push(`Revision ${pendingRev} is on trial: confirm it (or let it revert) before committing another; "Save to draft" works meanwhile.`);
  note.textContent = parts.join(" ");
  const btn = $("#conduit-commit");
  btn.disabled = pendingRev !== null;
  form.elements.trial.disabled = pendingRev !== null;
}

function formConduit() {
  const f = form.elements;
  const out = {
    name: f.name.value.trim(),
    owner: f.owner.value.trim(),
    reason: f.reason.value.trim(),
    from: parseList(f.from.value),
    to: parseList(f.to.value),
    services: parseList(f.services.value),
    direction: f.direction.value,
    enabled: f.enabled.checked,
  };
  const exp = fromLocalInput(f.expires.value);
  if (exp) out.expires = exp;
  if (f.description.value.trim()) out.description = f.description.value.trim();
  return out;
}

function fromDraft(name) {
  return (draft || running).find((c) => c.name === name);
}

async function save(ev, commitToo = false) {
  ev.preventDefault();
  if (checkRequired(form)) return;
  const conduit = formConduit();
  const buttons = [$("#conduit-save"), $("#conduit-commit")];
  for (const b of buttons) b.disabled = true;
  let saved = false;
  try {
    if (editing) {
      // keep fields the form does not show (e.g. future ones) from the draft's version
      const base = fromDraft(editing) || {};
      const keep = Object.fromEntries(Object.entries(base).filter(([k]) => !k.startsWith("_") && !["packets", "bytes", "active", "expires", "description"].includes(k)));
      await api("PUT", `/api/conduits/${encodeURIComponent(editing)}`, { ...keep, ...conduit });
    } else {
      await api("POST", "/api/conduits", conduit);
    }
    saved = true;
    if (!commitToo) {
      dialog.close();
      toast(`Conduit ${conduit.name} saved to the draft. Commit it on the Configuration page.`);
      return;
    }
    const within = Number(form.elements.trial.value) || 300;
    const verb = editing ? "changed" : "added";
    const r = await api("POST", "/api/config/commit", { confirm_within: within, comment: `conduit ${conduit.name} ${verb} in the web UI` });
    dialog.close();
    const id = r?.revision?.id ?? "";
    toast(`Conduit ${conduit.name} runs on trial (revision ${id}): confirm within ${Math.round(within / 60)} min or it reverts.`);
    await refreshStatus(); // the pending banner with its countdown and Confirm, at once
  } catch (e) {
    if (saved) {
      // in the draft, not committed: nothing half-done on the wire, and the form is done
      dialog.close();
      toast(`Conduit ${conduit.name} is in the draft, but the commit failed: ${e.message}`, "bad", 10000);
    } else {
      showErrors(form, e);
    }
  } finally {
    for (const b of buttons) b.disabled = false;
    paintBatch();
    if (saved) await load();
  }
}

async function expire(c) {
  const ok = await confirmDialog("Expire conduit", `Let ${c.name} expire now? It stays in the configuration (with its owner and reason) but passes nothing once the draft is committed.`, { ok: "Expire" });
  if (!ok) return;
  const base = fromDraft(c.name) || c;
  const body = Object.fromEntries(Object.entries(base).filter(([k]) => !k.startsWith("_") && !["packets", "bytes", "active"].includes(k)));
  body.expires = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
  try {
    await api("PUT", `/api/conduits/${encodeURIComponent(c.name)}`, body);
    toast(`${c.name} expires in the draft.`);
    await load();
  } catch (e) {
    toast(`Cannot expire ${c.name}: ${e.message}`, "bad", 8000);
  }
}

async function remove(c) {
  const ok = await confirmDialog("Delete conduit", `Remove ${c.name} from the draft? Its traffic stops once the draft is committed.`, { ok: "Delete", danger: true });
  if (!ok) return;
  try {
    await api("DELETE", `/api/conduits/${encodeURIComponent(c.name)}`);
    toast(`${c.name} removed from the draft.`);
    await load();
  } catch (e) {
    toast(`Cannot delete ${c.name}: ${e.message}`, "bad", 8000);
  }
}

$("#new-conduit").addEventListener("click", () => openForm(null));
$("#conduit-cancel").addEventListener("click", () => dialog.close());
form.addEventListener("submit", (ev) => save(ev, false));
$("#conduit-commit").addEventListener("click", (ev) => save(ev, true));
form.elements.name.addEventListener("input", () => (nameAuto = false));
for (const name of ["owner", "to", "services"]) form.elements[name].addEventListener("input", suggest);
onStatus((st) => {
  const rev = st.revision || {};
  const now = rev.state === "pending" ? rev.id : null;
  if (now !== pendingRev) {
    pendingRev = now;
    if (dialog.open) paintBatch();
  }
});
poll(load, 5000);
// The overview's "New conduit" leads here with #new: the form opens at once.
if (location.hash === "#new") {
  history.replaceState(null, "", location.pathname + location.search);
  sessionReady.then(() => openForm(null));
}
