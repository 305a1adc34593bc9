// The console's entry: find out whether the service wants a key, ask for it,
// then route between the views (#datasets, #jobs/<id>, #chat/<id>,
// #evaluations/<id>) and keep
// the visible one fresh by polling.

import { ApiError, call, session } from "./api.js";
import { chatView } from "./chat.js";
import { datasetsView } from "./datasets.js";
import { evaluationsView } from "./evaluations.js";
import { jobsView } from "./jobs.js";
import { announce, h, problemBox, show, showProblem } from "./ui.js";

// Each view: title, heading (id), init(context), enter(arg, {focus, prefill}),
// leave(), poll() -> milliseconds until its next poll.
const VIEWS = { datasets: datasetsView, jobs: jobsView, chat: chatView, evaluations: evaluationsView };
const DEFAULT_VIEW = "datasets";
const PROBE = "/datasets?limit=1";
const NOTICE_STORAGE = "finetune-console.notice";

const $ = (id) => document.getElementById(id);

let current = null;
let pollTimer = null;
const prefills = {};

function parseHash() {
  const [name, ...rest] = location.hash.replace(/^#/, "").split("/");
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  return VIEWS[name] ? { name, arg } : { name: DEFAULT_VIEW, arg: null };
}

// Other views call this to move the reader somewhere, optionally with a hint
// for the target view (jobs: which dataset to train on).
function navigate(name, arg = null, prefill = null) {
  if (prefill) prefills[name] = prefill;
  const hash = `#${name}${arg ? `/${encodeURIComponent(arg)}` : ""}`;
  if (location.hash === hash) route({ focus: true });
  else location.hash = hash;
}

async function route({ focus }) {
  const { name, arg } = parseHash();
  for (const key of Object.keys(VIEWS)) $(`view-${key}`).hidden = key !== name;
  for (const link of document.querySelectorAll("#nav a[data-view]")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${VIEWS[name].title} · Fine-tuning console`;
  if (current && current !== name && VIEWS[current].leave) VIEWS[current].leave();
  current = name;
  const prefill = prefills[name] || null;
  delete prefills[name];
  clearTimeout(pollTimer);
  try {
    await VIEWS[name].enter(arg, { focus, prefill });
  } finally {
    schedulePoll(name, 2000);
  }
}

function schedulePoll(name, delay) {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(() => poll(name), delay);
}

async function poll(name) {
  if (name !== current) return;
  let delay = 5000;
  try {
    delay = await VIEWS[name].poll();
  } catch (error) {
    // The view shows its own problem; wait as long as the service asks to.
    if (error instanceof ApiError && error.retryAfter) delay = error.retryAfter * 1000;
  }
  // A tab in the background looks less often.
  if (document.hidden) delay = Math.max(delay, 15000);
  if (name === current) schedulePoll(name, delay);
}

function showGate(problem) {
  $("booting").hidden = true;
  $("key-gate").hidden = false;
  if (problem) showProblem($("key-problem"), { problem }, { heading: "Key refused" });
  $("key-input").focus();
}

function startApp({ focus }) {
  $("booting").hidden = true;
  $("key-gate").hidden = true;
  $("nav").hidden = false;
  $("session").hidden = false;
  $("session-label").textContent = session.authDisabled
    ? "Authentication is off on this service (development)"
    : "Using your API key";
  $("forget-key").hidden = session.authDisabled;
  // A key that stops working mid-session (rotated, revoked) brings the prompt back.
  session.onUnauthorized = (problem) => {
    session.forget();
    sessionStorage.setItem(NOTICE_STORAGE, JSON.stringify(problem));
    location.reload();
  };
  const context = { navigate };
  for (const view of Object.values(VIEWS)) view.init(context);
  window.addEventListener("hashchange", () => route({ focus: true }));
  route({ focus });
  if (focus) announce("Signed in.");
}

async function checkKey(event) {
  event.preventDefault();
  const input = $("key-input");
  const key = input.value.trim();
  if (!key) {
    input.setAttribute("aria-invalid", "true");
    show($("key-problem"), h("p", { class: "problem", role: "alert" }, "Enter your API key."));
    input.focus();
    return;
  }
  const button = $("key-form").querySelector("button");
  button.disabled = true;
  try {
    await call(PROBE, { key });
    input.removeAttribute("aria-invalid");
    input.value = "";
    show($("key-problem"));
    session.remember(key);
    startApp({ focus: true });
  } catch (error) {
    input.setAttribute("aria-invalid", "true");
    showProblem($("key-problem"), error, { heading: error.status === 401 ? "Key refused" : undefined });
    input.focus();
  } finally {
    button.disabled = false;
  }
}

async function boot() {
  const notice = sessionStorage.getItem(NOTICE_STORAGE);
  sessionStorage.removeItem(NOTICE_STORAGE);
  $("key-form").addEventListener("submit", checkKey);
  $("forget-key").addEventListener("click", () => {
    session.forget();
    location.reload();
  });
  try {
    if (session.key) {
      try {
        await call(PROBE);
        startApp({ focus: false });
      } catch (error) {
        if (error.status !== 401) throw error;
        session.forget();
        showGate(error.problem);
      }
      return;
    }
    // No key yet: a request without one tells whether the service wants one.
    try {
      await call(PROBE, { key: null });
      session.authDisabled = true;
      startApp({ focus: false });
    } catch (error) {
      if (error.status !== 401) throw error;
      showGate(notice ? JSON.parse(notice) : null);
    }
  } catch (error) {
    $("booting").hidden = true;
    show(
      $("boot-problem"),
      problemBox(error.problem || { title: "The console failed to start", detail: String(error) }),
      h("button", { type: "button", onclick: () => location.reload() }, "Try again"),
    );
  }
}

boot();
