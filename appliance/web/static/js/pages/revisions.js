// Revisions: every configuration the unit has held, with rollback to any of them (admin).

import { $, api, clear, confirmDialog, fmtTime, h, listOf, pill, poll, table, toast } from "../lib.js";
import { refreshStatus } from "../shell.js";

async function load() {
  const revs = listOf(await api("GET", "/api/revisions"), "revisions");
  clear(
    $("#rev-table"),
    table(
      [
        { label: "#", get: (r) => h("a", { href: `#rev-${r.id}`, onclick: (ev) => (ev.preventDefault(), view(r.id)) }, String(r.id)), cls: "num" },
        { label: "state", get: (r) => pill(r.state, r.state) },
        { label: "author", get: (r) => r.author || "" },
        { label: "comment", cls: "clip", get: (r) => h("span", { title: [r.comment, r.reason].filter(Boolean).join("\n") }, h("span", { class: "clamp" }, r.comment || ""), r.reason ? h("span", { class: "small muted clamp" }, r.reason) : "") },
        { label: "created", get: (r) => fmtTime(r.created_at), cls: "when" },
        { label: "committed", get: (r) => fmtTime(r.committed_at), cls: "when" },
        { label: "confirmed", get: (r) => fmtTime(r.confirmed_at), cls: "when" },
        { label: "sha256", get: (r) => h("code", { class: "small", title: r.sha256 || "" }, String(r.sha256 || "").slice(0, 12)) },
        {
          label: "",
          cls: "act",
          get: (r) => [
            h("button", { type: "button", class: "btn small", onclick: () => view(r.id) }, "View"),
            " ",
            r.state !== "draft" && r.state !== "pending"
              ? h("button", { type: "button", class: "btn small needs-admin", "data-rollback": String(r.id), onclick: () => rollback(r) }, r.state === "confirmed" ? "Re-apply" : "Roll back to this")
              : "",
          ],
        },
      ],
      revs,
      { empty: "no revisions yet", rowAttrs: (r) => ({ "data-revision": String(r.id), "data-state": r.state }) },
    ),
  );
}

async function view(id) {
  try {
    const r = await api("GET", `/api/revisions/${id}`);
    const rev = r.revision && typeof r.revision === "object" ? { ...r.revision, ...r } : r;
    $("#rev-title").textContent = `Revision ${id}`;
    const facts = [
      ["state", pill(rev.state, rev.state)],
      ["author", rev.author],
      ["comment", rev.comment || "–"],
      ["reason", rev.reason || "–"],
      ["committed", `${fmtTime(rev.committed_at)} by ${rev.committed_by || "–"}`],
      ["confirmed", `${fmtTime(rev.confirmed_at)} by ${rev.confirmed_by || "–"}`],
      ["sha256", h("code", null, rev.sha256 || "")],
    ];
    clear($("#rev-facts"), facts.flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v ?? "–")]));
    let yaml = rev.yaml;
    if (!yaml) yaml = await api("GET", `/api/config/export?revision=${id}`).catch((e) => `(cannot load: ${e.message})`);
    $("#rev-yaml").textContent = typeof yaml === "string" ? yaml : JSON.stringify(yaml, null, 2);
    $("#rev-export").href = `/api/config/export?revision=${id}`;
    $("#rev-export").setAttribute("download", `revision-${id}.yaml`);
    $("#rev-dialog").showModal();
  } catch (e) {
    toast(`Cannot show revision ${id}: ${e.message}`, "bad");
  }
}

async function rollback(r) {
  const ok = await confirmDialog(
    `Roll back to revision ${r.id}`,
    `Commit revision ${r.id} (${r.comment || "no comment"}) again? It becomes the running configuration; the change is audited.`,
    { ok: "Roll back", danger: true },
  );
  if (!ok) return;
  try {
    const out = await api("POST", "/api/config/rollback", { revision: r.id });
    toast(`Rolling back to revision ${r.id}${out?.revision ? ` (now revision ${out.revision.id ?? out.revision})` : ""}.`);
    refreshStatus();
    p.now();
  } catch (e) {
    toast(`Rollback failed: ${e.message}`, "bad", 8000);
  }
}

const p = poll(load, 5000, $("#rev-error"));
