// The frame around every signed-in page: who is logged in (and their role, which shows or
// hides controls), the unit's name, its own health (a badge that opens its reasons) beside
// the plant's process alarms (their own indicator: they do not make the unit "degraded"),
// the pending-commit banner with its countdown and Confirm button, and the menu that folds
// away on a phone. Pages subscribe to the same /api/status poll.

import { $, ApiError, alarmSummary, api, clear, fmtDuration, h, headerHealth, markRequired, pill, setCsrf, toast } from "./lib.js";

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
  hp.title = `the unit's own health: ${reasons.map((r) => (typeof r === "string" ? r : r.message)).join("; ") || "no findings"}`;
  $("#health-pop-state").replaceChildren(pill(health.state, health.state || "unknown"));
  clear(
    $("#health-pop-reasons"),
    reasons.length
      ? reasons.map((r) => (typeof r === "string" ? h("li", null, r) : h("li", { "data-code": r.code }, pill(r.severity === "fault" ? "bad" : r.severity === "warning" ? "warn" : "info", r.severity), " ", r.message)))
      : h("li", { class: "muted" }, "no findings: all is well"),
  );
  paintAlarms(alarmSummary(st.alarms));
  paintPending(st.revision || {});
}

// The plant's process alarms: their own indicator, red with a critical one, amber else.
function paintAlarms(sum) {
  const ap = $("#alarm-pill");
  const state = sum.critical ? "bad" : sum.active ? "warn" : "off";
  ap.className = pill(state).className;
  ap.textContent = sum.active ? `${sum.active} alarm${sum.active === 1 ? "" : "s"}` : "no alarms";
  ap.dataset.active = String(sum.active);
  ap.title = sum.active
    ? `the plant's process alarms: ${sum.critical} critical, ${sum.warning} warning, ${sum.unacked} not acknowledged`
    : "the plant's process alarms: none active";
}

function toggleHealth(open) {
  const pop = $("#health-pop");
  const hp = $("#health-pill");
  const show = open ?? pop.hidden;
  pop.hidden = !show;
  hp.setAttribute("aria-expanded", String(show));
  if (show) {
    const r = hp.getBoundingClientRect();
    pop.style.left = `${Math.max(8, Math.min(r.left, window.innerWidth - pop.offsetWidth - 8))}px`;
    pop.style.top = `${r.bottom + 6}px`;
  }
}

function toggleMenu(open) {
  const show = open ?? !document.body.classList.contains("nav-open");
  document.body.classList.toggle("nav-open", show);
  $("#menu-toggle").setAttribute("aria-expanded", String(show));
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
  $("#menu-toggle").addEventListener("click", () => toggleMenu());
  $("#health-pill").addEventListener("click", (ev) => {
    ev.stopPropagation();
    toggleHealth();
  });
  document.addEventListener("click", (ev) => {
    if (!$("#health-pop").hidden && !ev.target.closest("#health-pop")) toggleHealth(false);
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key !== "Escape") return;
    if (!$("#health-pop").hidden) {
      toggleHealth(false);
      $("#health-pill").focus();
    }
    if (document.body.classList.contains("nav-open")) toggleMenu(false);
  });
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
