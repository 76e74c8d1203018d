// API tokens: your own (an admin sees everyone's); create (shown once) and revoke.

import { $, ApiError, api, checkRequired, clear, clearErrors, confirmDialog, fmtAgo, fmtTime, h, listOf, pill, poll, setCsrf, showErrors, table, toast } from "../lib.js";
import "../shell.js";

const form = $("#token-form");

function revoked(t) {
  return !!(t.revoked_at || t.revoked);
}

function expired(t) {
  return !!(t.expires_at && t.expires_at * 1000 <= Date.now());
}

async function load() {
  const tokens = listOf(await api("GET", "/api/tokens"), "tokens");
  clear(
    $("#tokens-table"),
    table(
      [
        { label: "name", get: (t) => h("strong", null, t.name || t.comment || `#${t.id}`) },
        { label: "user", get: (t) => t.user || t.username || "" },
        { label: "role", get: (t) => t.role },
        { label: "token", get: (t) => h("code", null, `${t.prefix || ""}…`) },
        { label: "created", get: (t) => fmtTime(t.created_at ?? t.created), cls: "nowrap" },
        { label: "expires", get: (t) => (t.expires_at ? fmtTime(t.expires_at) : "never"), cls: "nowrap" },
        { label: "last used", get: (t) => (t.last_used_at ?? t.last_used) ? `${fmtAgo(t.last_used_at ?? t.last_used)}${t.last_used_from ? ` from ${t.last_used_from}` : ""}` : "never", cls: "nowrap" },
        { label: "state", get: (t) => (revoked(t) ? pill("off", "revoked") : expired(t) ? pill("off", "expired") : pill("ok", "active")) },
        { label: "", cls: "act", get: (t) => (revoked(t) ? "" : h("button", { type: "button", class: "btn small danger", "data-revoke": String(t.id), onclick: () => revoke(t) }, "Revoke")) },
      ],
      tokens,
      { empty: "no tokens", rowAttrs: (t) => ({ "data-token": String(t.id), class: revoked(t) || expired(t) ? "inactive" : "" }) },
    ),
  );
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (checkRequired(form)) return;
  try {
    const days = Number(form.elements.expires.value);
    const body = { name: form.elements.name.value.trim(), role: form.elements.role.value };
    if (days) body.expires_at = Date.now() / 1000 + days * 86400;
    const r = await api("POST", "/api/tokens", body);
    $("#token-value").textContent = r.token;
    $("#token-once").hidden = false;
    form.reset();
    p.now();
  } catch (e) {
    showErrors(form, e);
  }
});

$("#token-copy").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("#token-value").textContent);
    toast("Copied.");
  } catch {
    const range = document.createRange();
    range.selectNodeContents($("#token-value"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    toast("Selected: press Ctrl+C to copy.");
  }
});
$("#token-hide").addEventListener("click", () => {
  $("#token-value").textContent = "";
  $("#token-once").hidden = true;
});

async function revoke(t) {
  if (!(await confirmDialog("Revoke token", `Revoke ${t.name || t.prefix || t.id}? Scripts using it stop working at once.`, { ok: "Revoke", danger: true }))) return;
  try {
    await api("DELETE", `/api/tokens/${t.id}`);
    toast("Token revoked.");
  } catch (e) {
    toast(e.message, "bad", 8000);
  }
  p.now();
}

const pwForm = $("#password-form");
pwForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (checkRequired(pwForm)) return;
  const f = pwForm.elements;
  if (f.new_password.value !== f.new_password2.value) {
    showErrors(pwForm, new ApiError(400, { error: "the two new passwords differ", field: "new_password2" }));
    return;
  }
  try {
    const s = await api("PUT", "/api/session/password", { current_password: f.current_password.value, new_password: f.new_password.value });
    if (s?.csrf) setCsrf(s.csrf);
    pwForm.reset();
    toast("Password changed.");
  } catch (e) {
    showErrors(pwForm, e);
  }
});

const p = poll(load, 10000, $("#tokens-error"));
