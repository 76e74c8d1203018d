// SQL console: read-only queries over the documented views; results as a table and CSV.

import { $, api, clear, clearErrors, csvOf, downloadText, fmtValue, h, scrollBox, showErrors } from "../lib.js";
import "../shell.js";

const form = $("#sql-form");
const query = $("#query");
let result = null;

query.value = sessionStorage.getItem("sql-query") || "SELECT * FROM tags ORDER BY tag";

async function run(ev) {
  if (ev) ev.preventDefault();
  clearErrors(form);
  sessionStorage.setItem("sql-query", query.value);
  $("#run").disabled = true;
  $("#sql-note").textContent = "running…";
  try {
    result = await api("POST", "/api/sql", { query: query.value, max_rows: Number(form.elements.max_rows.value) || 1000 });
    const cols = result.columns || [];
    const rows = result.rows || [];
    clear(
      $("#sql-result"),
      scrollBox(h(
        "table",
        { class: "grid", id: "sql-table" },
        h("thead", null, h("tr", null, cols.map((c) => h("th", null, c)))),
        h("tbody", null, rows.length ? rows.map((r) => h("tr", null, r.map((v) => h("td", { class: typeof v === "number" ? "num" : "" }, fmtValue(v))))) : h("tr", null, h("td", { class: "empty", colspan: cols.length || 1 }, "no rows"))),
      )),
    );
    $("#sql-note").textContent = `${rows.length} row${rows.length === 1 ? "" : "s"}${result.truncated ? " (truncated: raise max rows or narrow the query)" : ""} in ${Number(result.elapsed_ms || 0).toFixed(1)} ms`;
    $("#csv").disabled = false;
  } catch (e) {
    $("#sql-note").textContent = "";
    showErrors(form, e);
  } finally {
    $("#run").disabled = false;
  }
}

form.addEventListener("submit", run);
query.addEventListener("keydown", (ev) => {
  if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") run(ev);
});
$("#examples").addEventListener("change", (ev) => {
  if (ev.target.value) query.value = ev.target.value;
  ev.target.value = "";
  query.focus();
});
$("#csv").addEventListener("click", () => {
  if (result) downloadText("query.csv", csvOf(result.columns || [], result.rows || []));
});
