// A small table editor for lists of objects (NAT entries, interfaces): one row per item,
// one input per field, each input carrying the data-path the API names in its errors.

import { h, parseList, scrollBox } from "./lib.js";

// columns: [{key, label, type: text|list|number|select|checkbox, options, placeholder,
//            optional (omit when empty), width}]
export function rowEditor(container, { columns, prefix, empty = "none", addLabel = "Add" }) {
  let rows = [];
  const tbody = h("tbody");
  const tableEl = h(
    "table",
    { class: "grid edit" },
    h("thead", null, h("tr", null, columns.map((c) => h("th", null, c.label)), h("th", { class: "act" }, ""))),
    tbody,
  );
  const addBtn = h("button", { type: "button", class: "btn small needs-admin", onclick: () => add({}) }, addLabel);
  container.replaceChildren(scrollBox(tableEl), h("div", { class: "actions left" }, addBtn));

  function input(col, value, i) {
    const path = `${prefix}[${i}].${col.key}`;
    const common = { "data-path": path, "data-key": col.key, "aria-label": `${col.label} of row ${i + 1}` };
    if (col.type === "select") {
      return h("select", common, col.options.map((o) => h("option", { value: o, selected: o === value }, o)));
    }
    if (col.type === "checkbox") return h("input", { ...common, type: "checkbox", checked: value === undefined ? !!col.default : !!value });
    let text = value ?? "";
    if (col.type === "list") text = (value || []).join(", ");
    return h("input", { ...common, type: col.type === "number" ? "number" : "text", value: String(text), placeholder: col.placeholder || "", spellcheck: "false" });
  }

  function paint() {
    tbody.replaceChildren(
      ...(rows.length
        ? rows.map((r, i) =>
            h(
              "tr",
              { "data-row": i },
              columns.map((c) => h("td", null, input(c, r[c.key], i))),
              h("td", { class: "act" }, h("button", { type: "button", class: "btn small danger needs-admin", "aria-label": `Remove row ${i + 1}`, onclick: () => removeAt(i) }, "Remove")),
            ),
          )
        : [h("tr", null, h("td", { class: "empty", colspan: columns.length + 1 }, empty))]),
    );
  }

  function collect() {
    // read inputs back into rows, keeping keys the editor does not show
    const trs = [...tbody.querySelectorAll("tr[data-row]")];
    return trs.map((tr, i) => {
      const out = { ...rows[i] };
      for (const c of columns) {
        const el = tr.querySelector(`[data-key="${c.key}"]`);
        let v;
        if (c.type === "checkbox") v = el.checked;
        else if (c.type === "list") v = parseList(el.value);
        else if (c.type === "number") v = el.value === "" ? null : Number(el.value);
        else v = el.value.trim();
        const isEmpty = v === null || v === "" || (Array.isArray(v) && !v.length && c.optional);
        if (isEmpty && c.optional) delete out[c.key];
        else out[c.key] = v;
      }
      return out;
    });
  }

  function add(row) {
    rows = collect();
    rows.push(row);
    paint();
    const last = tbody.querySelector("tr[data-row]:last-child input, tr[data-row]:last-child select");
    if (last) last.focus();
  }

  function removeAt(i) {
    rows = collect();
    rows.splice(i, 1);
    paint();
  }

  return {
    set(list) {
      rows = (list || []).map((r) => ({ ...r }));
      paint();
    },
    get: collect,
    add,
  };
}
