// Modbus inventory: the devices seen through the proxy, and the conduit review.

import { $, api, clear, h, pill, poll, table, timeEl } from "../lib.js";
import "../shell.js";

function identification(d) {
  const units = Object.entries(d.identity || {});
  if (!units.length) return "-";
  return units.map(([unit, id]) => {
    const text = [id.vendor, id.product_code, id.revision].filter(Boolean).join(" ");
    return h("div", null, `unit ${unit}: `, text || (id.error ? `none (${id.error})` : "-"));
  });
}

async function refresh() {
  const [inv, review] = await Promise.all([api("GET", "/api/modbus/inventory"), api("GET", "/api/conduits/review")]);
  clear(
    $("#devices-table"),
    table(
      [
        { label: "device", get: (d) => h("code", null, d.address) },
        { label: "units", get: (d) => d.units.join(", ") || "-" },
        { label: "function codes", get: (d) => d.functions.join(", ") || "-" },
        { label: "identification", get: identification },
        { label: "first seen", get: (d) => timeEl(d.first_seen), cls: "nowrap" },
        { label: "last seen", get: (d) => timeEl(d.last_seen), cls: "nowrap" },
        { label: "conduits", get: (d) => d.conduits.join(", ") },
      ],
      inv.items,
      { empty: "no Modbus devices seen yet" },
    ),
  );
  clear(
    $("#review-table"),
    table(
      [
        { label: "conduit", get: (f) => h("code", null, f.conduit) },
        { label: "finding", get: (f) => pill(f.kind === "expired" || f.kind === "wider" ? "warn" : "info", f.kind) },
        { label: "why", get: (f) => f.message },
      ],
      review.findings,
      { empty: "nothing to look at again" },
    ),
  );
}

poll(refresh, 10000, $("#inventory-error"));
