// Users (admin): create, change role, reset password, disable/enable, delete.

import { $, api, checkRequired, clear, clearErrors, confirmDialog, fmtAgo, fmtTime, h, listOf, pill, poll, showErrors, table, toast } from "../lib.js";
import "../shell.js";

const dialog = $("#user-dialog");
const form = $("#user-form");
let editing = null;

function uname(u) {
  return u.name || u.username;
}

async function load() {
  const users = listOf(await api("GET", "/api/users"), "users");
  clear(
    $("#users-table"),
    table(
      [
        { label: "user", get: (u) => h("strong", null, uname(u)) },
        { label: "role", get: (u) => u.role },
        { label: "state", get: (u) => (u.disabled ? pill("off", "disabled") : pill("ok", "active")) },
        { label: "created", get: (u) => fmtTime(u.created_at ?? u.created), cls: "nowrap" },
        { label: "last login", get: (u) => h("span", { title: u.last_login_from || "" }, u.last_login_at || u.last_login ? `${fmtAgo(u.last_login_at ?? u.last_login)}${u.last_login_from ? ` from ${u.last_login_from}` : ""}` : "never"), cls: "nowrap" },
        {
          label: "",
          cls: "act",
          get: (u) => [
            h("button", { type: "button", class: "btn small", onclick: () => openForm(u) }, "Edit"),
            " ",
            h("button", { type: "button", class: "btn small", "data-toggle": uname(u), onclick: () => toggle(u) }, u.disabled ? "Enable" : "Disable"),
            " ",
            h("button", { type: "button", class: "btn small danger", onclick: () => remove(u) }, "Delete"),
          ],
        },
      ],
      users,
      { empty: "no users", rowAttrs: (u) => ({ "data-user": uname(u), class: u.disabled ? "inactive" : "" }) },
    ),
  );
}

function openForm(u) {
  editing = u ? uname(u) : null;
  clearErrors(form);
  form.reset();
  $("#user-form-title").textContent = u ? `Edit ${uname(u)}` : "New user";
  form.elements.username.value = u ? uname(u) : "";
  form.elements.username.readOnly = !!u;
  form.elements.role.value = u ? u.role : "viewer";
  // One's own password needs the current one: that form is on the API tokens page.
  const self = !!u && uname(u) === $("#user-name").textContent;
  form.elements.password.disabled = self;
  $("#pw-hint").textContent = self
    ? "your own: change it under API tokens, Your password (it asks for the current one)"
    : u
      ? "leave empty to keep the password"
      : "at least 12 characters, not a common one";
  dialog.showModal();
  (u ? form.elements.role : form.elements.username).focus();
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (checkRequired(form)) return;
  const f = form.elements;
  try {
    if (editing) {
      const body = { role: f.role.value };
      if (f.password.value) body.password = f.password.value;
      await api("PATCH", `/api/users/${encodeURIComponent(editing)}`, body);
    } else {
      await api("POST", "/api/users", { name: f.username.value.trim(), role: f.role.value, password: f.password.value });
    }
    dialog.close();
    toast(editing ? `${editing} updated.` : `${f.username.value.trim()} created.`);
    p.now();
  } catch (e) {
    showErrors(form, e);
  }
});

async function toggle(u) {
  try {
    await api("PATCH", `/api/users/${encodeURIComponent(uname(u))}`, { disabled: !u.disabled });
    toast(`${uname(u)} ${u.disabled ? "enabled" : "disabled"}.`);
  } catch (e) {
    toast(e.message, "bad", 8000);
  }
  p.now();
}

async function remove(u) {
  if (!(await confirmDialog("Delete user", `Delete ${uname(u)}? Their sessions and API tokens stop working.`, { ok: "Delete", danger: true }))) return;
  try {
    await api("DELETE", `/api/users/${encodeURIComponent(uname(u))}`);
    toast(`${uname(u)} deleted.`);
  } catch (e) {
    toast(e.message, "bad", 8000);
  }
  p.now();
}

$("#new-user").addEventListener("click", () => openForm(null));
$("#user-cancel").addEventListener("click", () => dialog.close());
const p = poll(load, 10000, $("#users-error"));
