// A filtered, paged log (events, audit): newest first, "Older" pages by before_id; the
// filters live in the URL so a view can be bookmarked or shared.

import { $, api, clear, listOf, table } from "./lib.js";

export function logPage({ endpoint, listKey, columns, filters }) {
  const form = $("#filters");
  const params = new URLSearchParams(location.search);
  for (const f of filters) if (params.get(f) !== null && form.elements[f]) form.elements[f].value = params.get(f);
  if (params.get("limit") && form.elements.limit) form.elements.limit.value = params.get("limit");
  let stack = []; // before_id of each page shown so far (for the note)
  let before = params.get("before_id") || null;
  let lastRows = [];
  let nextBefore = null;

  function query() {
    const q = new URLSearchParams();
    for (const f of [...filters, "limit"]) {
      const v = form.elements[f]?.value;
      if (v) q.set(f, v);
    }
    if (before) q.set("before_id", before);
    return q;
  }

  async function load() {
    const q = query();
    history.replaceState(null, "", `${location.pathname}?${q}`);
    try {
      const data = await api("GET", `${endpoint}?${q}`);
      lastRows = listOf(data, listKey);
      nextBefore = data && !Array.isArray(data) && "next_before_id" in data ? data.next_before_id : undefined;
      $("#log-error").hidden = true;
    } catch (e) {
      lastRows = [];
      $("#log-error").hidden = false;
      $("#log-error").textContent = e.message;
    }
    clear($("#log-table"), table(columns, lastRows, { empty: before ? "no older entries" : "nothing matches", rowAttrs: (r) => ({ "data-id": String(r.id) }) }));
    const limit = Number(form.elements.limit?.value || 50);
    $("#older").disabled = nextBefore === undefined ? lastRows.length < limit : nextBefore === null;
    $("#newest").disabled = !before;
    $("#page-note").textContent = lastRows.length ? `ids ${lastRows[0].id} … ${lastRows[lastRows.length - 1].id}${stack.length ? ` (page ${stack.length + 1})` : ""}` : "";
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    before = null;
    stack = [];
    load();
  });
  $("#older").addEventListener("click", () => {
    if (!lastRows.length) return;
    stack.push(before);
    before = String(nextBefore ?? lastRows[lastRows.length - 1].id);
    load();
  });
  $("#newest").addEventListener("click", () => {
    before = null;
    stack = [];
    load();
  });
  load();
}
