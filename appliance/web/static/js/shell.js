// The frame around every signed-in page: who is logged in (and their role, which shows or
// hides controls), the unit's name and health, and the pending-commit banner with its
// countdown and Confirm button. Pages subscribe to the same /api/status poll.

import { $, ApiError, api, clear, fmtDuration, h, headerHealth, markRequired, pill, setCsrf, toast } from "./lib.js";

const listeners = new Set();
let last = null;
let intervalMs = 5000;
let timer = null;
let deadline = null; // local epoch seconds of the pending revision's deadline
let pendingId = null;
const confirmedHere = new Set(); // revisions this tab confirmed: it said so already

export function onStatus(fn) {
  listeners.add(fn);
  if (last) fn(last);
}

export function latestStatus() {
  return last;
}

// The overview asks for a faster refresh (2 s); other pages keep 5 s.
export function setStatusInterval(ms) {
  intervalMs = ms;
  refreshStatus();
}

let generation = 0;

export async function refreshStatus() {
  clearTimeout(timer);
  const mine = ++generation; // only the newest call schedules the next poll
  try {
    const st = await api("GET", "/api/status");
    if (mine !== generation) return; // a newer call (e.g. after Confirm) paints, not this one
    st._fetched = Date.now() / 1000;
    last = st;
    $("#conn-lost").hidden = true;
    paintHeader(st);
    for (const fn of listeners) {
      try {
        fn(st);
      } catch (e) {
        console.error(e);
      }
    }
  } catch (e) {
    if (!(e instanceof ApiError) || e.status === 0 || e.status >= 500) {
      const lost = $("#conn-lost");
      lost.hidden = false;
      lost.textContent = `No answer from the unit: ${e.message}. Retrying…`;
    }
  }
  if (mine === generation) timer = setTimeout(refreshStatus, document.hidden ? intervalMs * 4 : intervalMs);
}

function paintHeader(st) {
  const unit = st.unit || {};
  $("#unit-name").textContent = unit.name || "appliance";
  $("#unit-site").textContent = unit.site || "";
  const health = headerHealth(st.health, st.revision);
  const hp = $("#health-pill");
  hp.className = pill(health.state).className;
  hp.textContent = health.state || "unknown";
  const reasons = health.reasons || [];
  hp.title = reasons.map((r) => (typeof r === "string" ? r : r.message)).join("\n") || "no findings";
  paintPending(st.revision || {});
}

function paintPending(rev) {
  const bar = $("#pending-bar");
  const isPending = rev.state === "pending" && (rev.confirm_deadline || rev.seconds_left !== undefined);
  if (isPending && rev.seconds_left !== null && rev.seconds_left !== undefined) {
    deadline = last._fetched + Number(rev.seconds_left);
  } else if (isPending && rev.confirm_deadline) {
    deadline = Number(rev.confirm_deadline);
  }
  if (pendingId !== null && (!isPending || rev.id !== pendingId)) {
    announceOutcome(pendingId);
  }
  pendingId = isPending ? rev.id : null;
  if (!isPending) {
    bar.hidden = true;
    deadline = null;
    document.body.classList.remove("has-pending");
    return;
  }
  document.body.classList.add("has-pending");
  bar.hidden = false;
  $("#pending-rev").textContent = String(rev.id);
  tickCountdown();
}

async function announceOutcome(id) {
  try {
    const rev = await api("GET", `/api/revisions/${id}`);
    const r = rev.revision || rev;
    if (r.state === "rolled-back") {
      showReverted(r);
    } else if (r.state === "confirmed" && !confirmedHere.has(r.id)) {
      toast(`Revision ${id} is confirmed and running.`, "ok");
    }
  } catch {
    /* the next status poll says what runs; this is only a courtesy message */
  }
}

function showReverted(r) {
  const bar = $("#revert-bar");
  clear(
    bar,
    h("span", null, h("strong", null, `Revision ${r.id} was rolled back`), `: ${r.reason || "it was not confirmed in time"}. The last confirmed revision runs again.`),
    h("a", { href: "/revisions" }, "Revisions"),
    h("button", { type: "button", class: "btn small", onclick: () => (bar.hidden = true) }, "Dismiss"),
  );
  bar.hidden = false;
  window.dispatchEvent(new CustomEvent("revision-reverted", { detail: r }));
}

export function secondsLeft() {
  return deadline === null ? null : Math.max(0, deadline - Date.now() / 1000);
}

function tickCountdown() {
  const left = secondsLeft();
  for (const el of document.querySelectorAll("[data-countdown]")) {
    el.textContent = left === null ? "–" : fmtDuration(left);
  }
  const bar = $("#pending-bar");
  if (bar) bar.classList.toggle("urgent", left !== null && left < 30);
}

// One toast for one Confirm (the poll that sees the revision confirmed stays quiet about
// it), and the header repainted from a fresh status at once, not at the next poll.
export async function confirmPending(button) {
  if (button) button.disabled = true;
  try {
    const r = await api("POST", "/api/config/confirm", {});
    const id = r && r.revision && typeof r.revision === "object" ? r.revision.id : pendingId;
    if (id !== null && id !== undefined) confirmedHere.add(id);
    toast(`Revision ${id ?? ""} is confirmed and running.`, "ok");
  } catch (e) {
    toast(`Confirm failed: ${e.message}`, "bad", 8000);
  } finally {
    if (button) button.disabled = false;
    await refreshStatus();
  }
}

async function loadSession() {
  try {
    const s = await api("GET", "/api/session");
    setCsrf(s.csrf);
    document.body.dataset.role = s.role || "";
    $("#user-name").textContent = s.user || "";
    $("#user-role").textContent = s.role || "";
  } catch (e) {
    if (e.status === 401) location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
  }
}

async function logout() {
  try {
    await api("DELETE", "/api/session");
  } catch {
    /* the session may already be gone; the login page follows either way */
  }
  location.assign("/login");
}

function markNav() {
  const here = location.pathname;
  for (const a of document.querySelectorAll("#nav a")) {
    const href = a.getAttribute("href");
    const on = href === "/" ? here === "/" : here === href || here.startsWith(`${href}/`);
    if (on) a.setAttribute("aria-current", "page");
  }
}

function init() {
  markNav();
  markRequired(document);
  $("#logout").addEventListener("click", logout);
  for (const b of document.querySelectorAll("[data-action=confirm-pending]")) {
    b.addEventListener("click", () => confirmPending(b));
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshStatus();
  });
  setInterval(tickCountdown, 250);
  refreshStatus();
}

// Pages that build role-dependent controls wait for this.
export const sessionReady = loadSession();
init();
