// First boot: the one-time setup code and the first administrator, then straight in.

import { $, ApiError, api, clearErrors, markRequired, showErrors } from "../lib.js";

const form = $("#setup-form");
markRequired(form);

async function init() {
  try {
    const st = await api("GET", "/api/setup");
    if (st && st.required === false) {
      form.hidden = true;
      $("#setup-done").hidden = false;
    }
  } catch {
    /* show the form; the POST answers clearly if setup is not possible */
  }
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  clearErrors(form);
  const d = Object.fromEntries(new FormData(form));
  const local = [];
  if (!d.code.trim()) local.push({ path: "code", message: "enter the setup code" });
  if (!d.username.trim()) local.push({ path: "username", message: "choose a user name" });
  if (d.password.length < 12) local.push({ path: "password", message: "at least 12 characters" });
  if (d.password !== d.password2) local.push({ path: "password2", message: "the two passwords differ" });
  if (local.length) return showErrors(form, new ApiError(400, { error: local[0].message, errors: local }));
  const button = $("button[type=submit]", form);
  button.disabled = true;
  try {
    await api("POST", "/api/setup", { code: d.code.trim(), username: d.username.trim(), password: d.password });
    await api("POST", "/api/session", { username: d.username.trim(), password: d.password });
    location.replace("/"); // Back must not lead to a setup form already used
  } catch (e) {
    showErrors(form, e);
  } finally {
    button.disabled = false;
  }
});

init();
