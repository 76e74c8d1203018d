// Sign in: POST /api/session; a lockout (429) says how long to wait; before the first
// admin exists the page leads to /setup.

import { $, ApiError, api, clearErrors, markRequired, qs, showErrors } from "../lib.js";

const form = $("#login-form");
markRequired(form);

async function init() {
  if (qs("logout")) {
    try {
      await api("DELETE", "/api/session");
    } catch {
      /* no session left to end */
    }
    $("#logout-note").hidden = false;
    history.replaceState(null, "", "/login");
  }
  try {
    const st = await api("GET", "/api/setup");
    if (st && st.required) location.replace("/setup");
  } catch {
    /* the form still works; the API answers the login itself */
  }
}

function lockoutMessage(e) {
  const retry = e.retryAfter || e.body.retry_after || e.body.retry_after_s;
  const base = e.message || "too many failed attempts";
  return retry && !/\d+ ?s\b/.test(base) ? `${base} (try again in ${Math.ceil(retry)} s)` : base;
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  clearErrors(form);
  const button = $("button[type=submit]", form);
  const data = Object.fromEntries(new FormData(form));
  if (!data.username) return showErrors(form, new ApiError(400, { error: "enter your user name", field: "username" }));
  if (!data.password) return showErrors(form, new ApiError(400, { error: "enter your password", field: "password" }));
  button.disabled = true;
  try {
    await api("POST", "/api/session", { username: data.username, password: data.password });
    location.replace(form.dataset.next || "/"); // the login page leaves the history too
  } catch (e) {
    if (e.status === 429) {
      showErrors(form, new ApiError(429, { error: lockoutMessage(e) }));
    } else if (e.status === 401 || e.status === 403) {
      showErrors(form, new ApiError(e.status, { error: e.message || "wrong user name or password" }));
      $("input[name=password]", form).value = "";
      $("input[name=password]", form).focus();
    } else {
      showErrors(form, e);
    }
  } finally {
    button.disabled = false;
  }
});

// Back after signing in may bring this page out of the browser's back-forward cache as it
// was: ask the unit again instead, which sends someone signed in on to where it leads.
window.addEventListener("pageshow", (ev) => {
  if (ev.persisted) location.reload();
});

init();
