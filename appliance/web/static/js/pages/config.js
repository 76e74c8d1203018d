// Configuration: the draft vs running diff, commit with a confirm deadline (countdown and
// Confirm button; the automatic revert is shown when nobody confirms), during a trial what
// the trial changes (the previous confirmed revision vs the pending one), the YAML editor
// with import/export and errors at their line.

import { $, api, clear, clearErrors, fmtTime, h, listOf, revisionFacts, showErrors, toast } from "../lib.js";
import { lineEditor } from "../editor.js";
import { onStatus, refreshStatus } from "../shell.js";

const editor = lineEditor($("#yaml"), $("#gutter"));
let editSource = null;

// -- tabs ------------------------------------------------------------------------------------
const tabs = { changes: $("#tab-changes"), edit: $("#tab-edit") };
function show(name) {
  for (const [k, b] of Object.entries(tabs)) {
    b.setAttribute("aria-selected", String(k === name));
    $(`#pane-${k}`).hidden = k !== name;
  }
  history.replaceState(null, "", name === "edit" ? "#edit" : location.pathname);
  if (name === "edit" && editSource === null) loadYaml();
}
tabs.changes.addEventListener("click", () => show("changes"));
tabs.edit.addEventListener("click", () => show("edit"));
for (const b of Object.values(tabs)) {
  b.addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
      const next = b === tabs.changes ? tabs.edit : tabs.changes;
      next.focus();
      next.click();
    }
  });
}

// -- diff ------------------------------------------------------------------------------------
function paintDiff(pre, text) {
  const lines = String(text || "").split("\n");
  clear(
    pre,
    lines.map((l) => {
      let cls = "ctx";
      if (l.startsWith("+++") || l.startsWith("---")) cls = "hunk";
      else if (l.startsWith("+")) cls = "add";
      else if (l.startsWith("-")) cls = "del";
      else if (l.startsWith("@@")) cls = "hunk";
      return h("span", { class: cls }, `${l}\n`);
    }),
  );
  pre.hidden = !text;
}

const revLabel = (x) => (x && typeof x === "object" ? `revision ${x.id ?? "?"}${x.state ? ` (${x.state})` : ""}` : x ? String(x) : "none");

function paintChanges(list, changes, same) {
  clear(list, changes.length ? changes.map((c) => h("li", null, typeof c === "string" ? c : c.message || JSON.stringify(c))) : h("li", { class: "muted" }, same));
}

function noDraft(text) {
  const box = $("#no-draft");
  if (text) box.textContent = text;
  box.hidden = false;
  $("#changes").replaceChildren();
  paintDiff($("#diff"), "");
  $("#diff-revs").textContent = "";
}

// Draft vs running; asked only when both exist (the diff answers 404 otherwise).
async function loadDiff() {
  try {
    const facts = await revisionFacts();
    loadTrial(facts);
    if (!facts.draft) {
      noDraft();
      $("#commit-panel").hidden = true;
      return;
    }
    if (!facts.running) {
      noDraft(`Nothing runs yet: draft revision ${facts.draft.id} is the first configuration. Commit it to run it.`);
      $("#commit-panel").hidden = false;
      return;
    }
    const d = await api("GET", "/api/config/diff?a=running&b=draft");
    $("#no-draft").hidden = true;
    const changes = d.changes || [];
    paintChanges($("#changes"), changes, "the draft is the same as the running configuration");
    paintDiff($("#diff"), d.diff);
    $("#diff-revs").textContent = `${revLabel(d.a)} → ${revLabel(d.b)}`;
    $("#commit-panel").hidden = !changes.length && !d.diff;
  } catch (e) {
    if (e.status === 404 || e.status === 409) {
      noDraft(); // committed or replaced meanwhile
      $("#commit-panel").hidden = true;
    } else {
      noDraft(`Cannot show the diff: ${e.message}`);
    }
  }
}

// During a trial: what it changes, from the confirmed revision it reverts to.
let trialShown = null;
let scrollToTrial = false;
async function loadTrial(facts) {
  const pending = facts.pending;
  const note = $("#trial-note");
  if (!pending) {
    trialShown = null;
    return;
  }
  if (trialShown === pending.id) return;
  trialShown = pending.id;
  if (!facts.confirmed) {
    $("#trial-changes").replaceChildren();
    paintDiff($("#trial-diff"), "");
    $("#trial-revs").textContent = "";
    note.textContent = `Nothing was confirmed before: revision ${pending.id} is the first configuration, and a revert leaves the unit fail-closed.`;
    note.hidden = false;
    return;
  }
  try {
    const d = await api("GET", `/api/config/diff?a=${facts.confirmed.id}&b=${pending.id}`);
    note.hidden = true;
    paintChanges($("#trial-changes"), d.changes || [], "the trial runs the same configuration as the confirmed revision");
    paintDiff($("#trial-diff"), d.diff);
    $("#trial-revs").textContent = `${revLabel(d.a)} → ${revLabel(d.b)}`;
  } catch (e) {
    trialShown = null;
    note.textContent = `Cannot show what the trial changes: ${e.message}`;
    note.hidden = false;
  }
}

// -- commit ------------------------------------------------------------------------------------
const commitForm = $("#commit-form");
commitForm.elements.trial.addEventListener("change", () => {
  commitForm.elements.confirm_within.disabled = !commitForm.elements.trial.checked;
});
commitForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  clearErrors(commitForm);
  const f = commitForm.elements;
  const body = { confirm_within: f.trial.checked ? Number(f.confirm_within.value) : null, comment: f.comment.value.trim() };
  $("#commit-btn").disabled = true;
  try {
    const r = await api("POST", "/api/config/commit", body);
    const rev = r.revision && typeof r.revision === "object" ? r.revision.id : r.revision;
    toast(body.confirm_within ? `Revision ${rev} committed: confirm it within ${body.confirm_within} s or it reverts.` : `Revision ${rev} committed.`);
    $("#reverted").hidden = true;
    f.comment.value = "";
    await refreshStatus();
    await loadDiff();
  } catch (e) {
    showErrors(commitForm, e);
  } finally {
    $("#commit-btn").disabled = false;
  }
});

// -- pending and revert ------------------------------------------------------------------------
onStatus((st) => {
  const rev = st.revision || {};
  const pending = rev.state === "pending" && (rev.confirm_deadline || rev.seconds_left !== undefined);
  $("#cfg-pending").hidden = !pending;
  if (pending) $("#cfg-pending-rev").textContent = String(rev.id);
  if (pending && trialShown !== rev.id) revisionFacts().then(loadTrial, () => {});
  if (!pending) trialShown = null;
  if (pending && scrollToTrial) {
    scrollToTrial = false;
    $("#cfg-pending").scrollIntoView({ block: "start" });
  }
});
// A revert that happened while nobody had the page open is shown too: the newest
// revision rolled back after the running one was confirmed.
async function recentRevert() {
  try {
    const list = listOf(await api("GET", "/api/revisions"), "revisions");
    const newest = list.find((r) => r.state !== "draft");
    const running = list.find((r) => r.state === "confirmed" || r.state === "pending");
    if (newest && newest.state === "rolled-back" && (!running || newest.id > running.id)) showReverted(newest);
  } catch {
    /* the frame's status poll keeps the page useful without this notice */
  }
}

window.addEventListener("revision-reverted", (ev) => showReverted(ev.detail));

function showReverted(r) {
  const box = $("#reverted");
  clear(box, h("strong", null, `Revision ${r.id} was rolled back`), `${r.ended_at ? ` at ${fmtTime(r.ended_at)}` : ""}: ${r.reason || "nobody confirmed it in time"}. The last confirmed revision runs again; your draft is unchanged.`);
  box.hidden = false;
  loadDiff();
}

// -- YAML editor ---------------------------------------------------------------------------------
const yamlForm = $("#yaml-form");

async function loadYaml() {
  clearYamlErrors();
  // Nobody types into the editor while the document is on its way: a late answer would
  // otherwise land in the middle of what they typed (or replace it).
  const area = $("#yaml");
  area.readOnly = true;
  area.setAttribute("aria-busy", "true");
  try {
    await fillYaml();
  } finally {
    area.readOnly = false;
    area.removeAttribute("aria-busy");
  }
}

async function fillYaml() {
  const facts = await revisionFacts(); // the draft is asked for only when there is one
  const get = (which) => api("GET", `/api/config/${which}`).catch((e) => (e.status === 404 ? null : Promise.reject(e)));
  const d = facts.draft ? await get("draft") : null;
  if (d) {
    editSource = "draft";
    editor.set(d.yaml || "");
    $("#edit-source").textContent = `the draft (revision ${d.revision?.id ?? d.revision ?? "?"})`;
    return;
  }
  const r = facts.running || facts.draft ? await get("running") : null;
  if (r) {
    editSource = "running";
    editor.set(r.yaml || "");
    $("#edit-source").textContent = "the running configuration (saving creates a draft)";
    return;
  }
  editor.set("version: 1\nunit:\n  name: appliance\ninterfaces: []\nconduits: []\n");
  editSource = "new";
  $("#edit-source").textContent = "no configuration yet";
}

function clearYamlErrors() {
  clearErrors(yamlForm);
  $("#yaml-errors").replaceChildren();
  editor.markErrors([]);
}

function showYamlErrors(err) {
  const list = err.errors && err.errors.length ? err.errors : [{ path: err.field, message: err.message, line: null }];
  editor.markErrors(list.map((e) => e.line));
  clear(
    $("#yaml-errors"),
    list.map((e) =>
      h(
        "li",
        { tabindex: "0", "data-line": e.line ?? "", onclick: () => e.line && editor.goto(e.line), onkeydown: (ev) => ev.key === "Enter" && e.line && editor.goto(e.line) },
        e.line ? h("strong", null, `line ${e.line}: `) : "",
        e.path ? h("code", null, e.path) : "",
        e.path ? ": " : "",
        e.message,
      ),
    ),
  );
  $("#yaml").setAttribute("aria-invalid", "true");
  const first = list.find((e) => e.line);
  if (first) editor.goto(first.line);
}

async function saveYaml(text) {
  clearYamlErrors();
  $("#yaml-save").disabled = true;
  try {
    const r = await api("PUT", "/api/config/draft", text);
    for (const w of r?.warnings || []) toast(`warning: ${w}`, "bad", 10000);
    toast(`Saved as draft revision ${r?.revision?.id ?? r?.revision ?? ""}. Review the changes and commit.`);
    editSource = "draft";
    $("#edit-source").textContent = `the draft (revision ${r?.revision?.id ?? r?.revision ?? "?"})`;
    await loadDiff();
  } catch (e) {
    showYamlErrors(e);
  } finally {
    $("#yaml-save").disabled = false;
  }
}

yamlForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  saveYaml(editor.get());
});
$("#yaml").addEventListener("keydown", (ev) => {
  if ((ev.ctrlKey || ev.metaKey) && ev.key === "s") {
    ev.preventDefault();
    saveYaml(editor.get());
  }
});
$("#yaml-reload").addEventListener("click", () => loadYaml());
$("#import-file").addEventListener("change", async (ev) => {
  const file = ev.target.files[0];
  ev.target.value = "";
  if (!file) return;
  if (file.size > 2_000_000) return toast(`${file.name} is too large for a configuration (over 2 MB)`, "bad");
  const text = await file.text();
  editSource = "import";
  show("edit");
  editor.set(text);
  $("#edit-source").textContent = `imported from ${file.name} (not saved until valid)`;
  await saveYaml(text);
});

// "Review the change" (the pending banner) leads to #trial: what the trial changes.
function route() {
  const hash = location.hash;
  show(hash === "#edit" ? "edit" : "changes");
  if (hash !== "#trial") return;
  if ($("#cfg-pending").hidden) scrollToTrial = true; // once the status says it is on trial
  else $("#cfg-pending").scrollIntoView({ block: "start" });
}
window.addEventListener("hashchange", route);
loadDiff();
recentRevert();
route();
