// Chat: one question to a tuned model and to the model it was trained from,
// both streamed from POST /chat (stream=true) side by side.

import { call, listAll, serverSentEvents } from "./api.js";
import { announce, h, problemBox, show, showProblem } from "./ui.js";

const $ = (id) => document.getElementById(id);

let models = []; // succeeded jobs: { id, model, fine_tuned_model }
let turns = 0;
let running = null; // the AbortController of the question being answered

function selectedJob() {
  return models.find((job) => job.id === $("chat-job").value) || null;
}

function describeBase() {
  const job = selectedJob();
  const hint = $("chat-base");
  if (!job) {
    hint.textContent = "";
    return;
  }
  hint.replaceChildren("Compared with its base model ", h("code", {}, job.model), ` (job ${job.id}).`);
}

async function loadModels(preferred) {
  const select = $("chat-job");
  const current = preferred || select.value;
  const page = await listAll("/jobs?status=succeeded", { max: 200 });
  models = page.data.filter((job) => job.fine_tuned_model);
  const key = JSON.stringify(models.map((job) => [job.id, job.fine_tuned_model]));
  if (select.dataset.renderKey !== key) {
    select.dataset.renderKey = key;
    select.replaceChildren(
      ...(models.length
        ? models.map((job) => h("option", { value: job.id }, job.fine_tuned_model))
        : [h("option", { value: "" }, "No tuned model yet")]),
    );
  }
  if (current && models.some((job) => job.id === current)) select.value = current;
  const none = !models.length;
  select.disabled = none;
  if (!running) $("chat-send").disabled = none;
  if (none) {
    show(
      $("chat-problem"),
      h("p", { class: "empty" }, "No tuned model yet. When a job succeeds, its model appears here; ", h("a", { href: "#jobs" }, "see your jobs"), "."),
    );
  } else if ($("chat-problem").querySelector(".empty")) {
    show($("chat-problem"));
  }
  describeBase();
}

function answerPanel(turn, role, title, model) {
  const headingId = `answer-${turn}-${role}`;
  const text = h("div", { class: "answer-text", "aria-live": "polite", "aria-busy": "true" });
  const state = h("p", { class: "answer-state muted" }, "Waiting…");
  const problem = h("div", { class: "answer-problem" });
  const panel = h(
    "section",
    { class: `answer ${role}`, "data-role": role, "aria-labelledby": headingId },
    h("h4", { id: headingId }, `${title} `, h("code", {}, model)),
    text,
    state,
    problem,
  );
  return { panel, text, state, problem };
}

// Streams one answer into its panel; resolves whatever happens (errors are shown there).
async function streamInto(target, body, signal) {
  const started = performance.now();
  let answer = "";
  let usage = null;
  let finish = null;
  try {
    const response = await call("/chat", { method: "POST", json: { ...body, stream: true }, stream: true, signal });
    target.state.textContent = "Answering…";
    for await (const data of serverSentEvents(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) {
        throw Object.assign(new Error(chunk.error.message), {
          problem: { title: "The model stopped with an error", detail: chunk.error.message, code: chunk.error.code },
        });
      }
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) {
          answer += choice.delta.content;
          target.text.textContent = answer;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const tokens = usage ? ` · ${usage.completion_tokens} tokens` : "";
    const cut = finish === "length" ? " · cut off at the token limit" : "";
    target.state.textContent = `Done in ${seconds} s${tokens}${cut}`;
    target.panel.classList.add("done");
    return true;
  } catch (error) {
    if (error.name === "AbortError") {
      target.state.textContent = answer ? "Stopped part-way." : "Stopped.";
    } else {
      target.state.textContent = "No answer.";
      show(target.problem, problemBox(error.problem || { title: "The answer failed", detail: String(error.message) }));
    }
    target.panel.classList.add("failed");
    return false;
  } finally {
    target.text.setAttribute("aria-busy", "false");
  }
}

async function ask(event) {
  event.preventDefault();
  const job = selectedJob();
  const questionField = $("chat-question");
  const question = questionField.value.trim();
  if (!job || !question) {
    const field = !job ? $("chat-job") : questionField;
    field.setAttribute("aria-invalid", "true");
    show($("chat-problem"), h("p", { class: "problem", role: "alert" }, !job ? "Choose a tuned model first." : "Type a question first."));
    field.focus();
    return;
  }
  questionField.removeAttribute("aria-invalid");
  showProblem($("chat-problem"), null);

  const messages = [];
  const system = $("chat-system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push({ role: "user", content: question });

  turns += 1;
  const tuned = answerPanel(turns, "tuned", "Tuned", job.fine_tuned_model);
  const base = answerPanel(turns, "base", "Base", job.model);
  const turn = h(
    "article",
    { class: "turn", "aria-labelledby": `question-${turns}` },
    h("h3", { id: `question-${turns}`, class: "question" }, h("span", { class: "visually-hidden" }, `Question ${turns}: `), question),
    h("div", { class: "answers" }, tuned.panel, base.panel),
  );
  $("chat-transcript").prepend(turn);
  questionField.value = "";

  running = new AbortController();
  $("chat-send").disabled = true;
  $("chat-stop").disabled = false;
  announce("Asking both models…");
  const [tunedOk, baseOk] = await Promise.all([
    streamInto(tuned, { job_id: job.id, messages }, running.signal),
    streamInto(base, { model: job.model, messages }, running.signal),
  ]);
  const stopped = running.signal.aborted;
  running = null;
  $("chat-stop").disabled = true;
  $("chat-send").disabled = !models.length;
  if (stopped) announce("Stopped.");
  else if (tunedOk && baseOk) announce("Both answers are complete.");
  else announce("At least one answer failed; see its panel.");
}

export const chatView = {
  title: "Chat",
  heading: "chat-title",

  init() {
    $("chat-form").addEventListener("submit", ask);
    $("chat-job").addEventListener("change", describeBase);
    $("chat-question").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        $("chat-form").requestSubmit();
      }
    });
    $("chat-stop").addEventListener("click", () => running && running.abort());
  },

  async enter(arg, { focus }) {
    try {
      await loadModels(arg);
    } catch (error) {
      showProblem($("chat-problem"), error, { heading: "Could not list tuned models" });
    }
    if (focus) (arg && models.length ? $("chat-question") : $("chat-title")).focus();
  },

  async poll() {
    await loadModels();
    return 15000;
  },
};
