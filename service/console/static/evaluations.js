// Evaluations: start one (a tuned model against its base, on a dataset), follow
// every evaluation's progress, and see one's scores, win rate, cost and rows.
// `scoresTable` is also what the jobs view shows for a job's own evaluation.

import { call, listAll } from "./api.js";
import { announce, count, h, label, show, showIfChanged, showProblem, statusBadge, table, when } from "./ui.js";

const $ = (id) => document.getElementById(id);

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const METRICS = {
  exact_match: { name: "Exact match", max: 1, digits: 2 },
  chrf: { name: "chrF", max: 100, digits: 1 },
  grader: { name: "Grader (1–5)", max: 5, digits: 2 },
};
const ROWS_PER_PAGE = 20;
const FAST_POLL_MS = 2000;
const SLOW_POLL_MS = 15000;

let evaluations = [];
let jobs = [];
let datasets = [];
let selectedId = null;
let selection = 0;
let detail = null; // { evaluation, finalised }
let rows = { data: [], more: false, forId: null };

const isTerminal = (status) => TERMINAL.has(status);

function estimate(score, metric) {
  if (!score) return "—";
  const { max, digits } = METRICS[metric] || { max: 1, digits: 2 };
  return [
    h("meter", { min: 0, max, value: score.mean, "aria-hidden": "true" }),
    ` ${score.mean.toFixed(digits)} `,
    h("span", { class: "muted small" }, `(${score.ci_low.toFixed(digits)}–${score.ci_high.toFixed(digits)}, n=${count(score.n)})`),
  ];
}

// Per-model means with their 95% intervals, the win rate and the tokens spent.
export function scoresTable(summary, metrics) {
  if (!summary || !summary.models.length) return h("p", { class: "empty" }, "No answers scored yet.");
  const shown = metrics.filter((m) => METRICS[m]);
  const win = summary.win_rate;
  return [
    table(
      "Scores: mean and 95% interval",
      ["Model", ...shown.map((m) => METRICS[m].name), "Answered", "Tokens"],
      summary.models.map((m) => [
        h("code", {}, m.model),
        ...shown.map((metric) => estimate(m.scores[metric], metric)),
        m.errors ? `${count(m.answered)} (${count(m.errors)} refused)` : count(m.answered),
        count(m.usage.total_tokens),
      ]),
      { className: "scores" },
    ),
    win && win.rate !== null
      ? h(
          "p",
          {},
          h("code", {}, win.model),
          ` scores higher than `,
          h("code", {}, win.over),
          ` on ${count(win.wins)} of ${count(win.compared)} examples by ${METRICS[win.metric] ? METRICS[win.metric].name : win.metric}`,
          ` (${count(win.ties)} ties): win rate `,
          h("strong", {}, win.rate.toFixed(2)),
          ".",
        )
      : null,
    h("p", { class: "muted small" }, `${count(summary.cost.total_tokens)} tokens in all (${count(summary.cost.grader_tokens)} by the grader).`),
  ];
}

// ---- the start form ----

function fillSelects() {
  const jobSelect = $("evaluation-job");
  const datasetSelect = $("evaluation-dataset");
  const tuned = jobs.filter((j) => j.fine_tuned_model);
  const jobKey = JSON.stringify(tuned.map((j) => [j.id, j.fine_tuned_model]));
  if (jobSelect.dataset.renderKey !== jobKey) {
    const current = jobSelect.value;
    jobSelect.dataset.renderKey = jobKey;
    jobSelect.replaceChildren(
      ...(tuned.length
        ? tuned.map((j) => h("option", { value: j.id }, `${j.fine_tuned_model} (vs ${j.model})`))
        : [h("option", { value: "" }, "No tuned model yet")]),
    );
    if (tuned.some((j) => j.id === current)) jobSelect.value = current;
  }
  jobSelect.disabled = !tuned.length;
  const ready = datasets.filter((d) => d.status === "ready");
  const dataKey = JSON.stringify([ready.map((d) => [d.id, d.name, d.example_count]), jobSelect.value]);
  if (datasetSelect.dataset.renderKey !== dataKey) {
    datasetSelect.dataset.renderKey = dataKey;
    const job = tuned.find((j) => j.id === jobSelect.value);
    // The job's own validation examples first: held-out questions say the most.
    const order = [...ready].sort((a, b) => rank(b, job) - rank(a, job));
    datasetSelect.replaceChildren(
      ...(order.length
        ? order.map((d) => h("option", { value: d.id }, `${d.name} · ${d.role} · ${count(d.example_count)} examples (${d.id})`))
        : [h("option", { value: "" }, "No dataset is ready")]),
    );
  }
  datasetSelect.disabled = !ready.length;
}

function rank(dataset, job) {
  if (!job) return 0;
  if (dataset.id === job.validation_dataset_id || dataset.training_dataset_id === job.dataset_id) return 2;
  return dataset.id === job.dataset_id ? 1 : 0;
}

async function loadChoices() {
  const [jobPage, datasetPage] = await Promise.all([
    listAll("/jobs?status=succeeded", { max: 200 }),
    listAll("/datasets", { max: 200 }),
  ]);
  jobs = jobPage.data;
  datasets = datasetPage.data;
  fillSelects();
}

function wireForm() {
  const form = $("evaluation-form");
  const result = $("evaluation-form-result");
  $("evaluation-job").addEventListener("change", fillSelects);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const jobId = form.elements.job_id.value;
    const datasetId = form.elements.dataset_id.value;
    const missing = !jobId ? $("evaluation-job") : !datasetId ? $("evaluation-dataset") : null;
    if (missing) {
      missing.setAttribute("aria-invalid", "true");
      show(result, h("p", { class: "problem", role: "alert" }, "Choose a tuned model and a dataset."));
      missing.focus();
      return;
    }
    const body = { job_id: jobId, dataset_id: datasetId };
    const max = form.elements.max_examples.value.trim();
    if (max) body.max_examples = Number(max);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const created = await call("/evaluations", {
        method: "POST",
        json: body,
        headers: { "Idempotency-Key": crypto.randomUUID() },
      });
      show(result);
      announce(`Evaluation ${created.id} started`);
      await loadEvaluations().catch(() => {});
      location.hash = `#evaluations/${encodeURIComponent(created.id)}`;
    } catch (error) {
      showProblem(result, error, { heading: "Could not start the evaluation" });
    } finally {
      button.disabled = false;
    }
  });
}

// ---- the list ----

function progressText(e) {
  return `${count(e.progress.done)} of ${count(e.progress.total)}`;
}

function renderList() {
  const key = JSON.stringify([evaluations.map((e) => [e.id, e.status, e.progress.done]), selectedId]);
  showIfChanged($("evaluations-list"), key, () => {
    if (!evaluations.length) return h("p", { class: "empty" }, "No evaluations yet. Start one above.");
    return table(
      "Evaluations, newest first",
      ["Evaluation and models", "Status", "Examples", "Created"],
      evaluations.map((e) => [
        [
          h("a", { href: `#evaluations/${encodeURIComponent(e.id)}`, "aria-current": e.id === selectedId ? "true" : null }, e.id),
          h("br"),
          h("span", { class: "muted small" }, e.models.map((m) => m.model).join(" vs "), e.origin === "job" ? " · on job success" : ""),
        ],
        statusBadge(e.status),
        progressText(e),
        when(e.created_at),
      ]),
      { className: "evaluations" },
    );
  });
}

async function loadEvaluations() {
  try {
    const page = await listAll("/evaluations", { max: 200 });
    evaluations = page.data;
    showProblem($("evaluations-problem"), null);
  } catch (error) {
    showProblem($("evaluations-problem"), error, { heading: "Could not list evaluations" });
    throw error;
  }
  renderList();
}

// ---- one evaluation ----

function facts(e) {
  const rowsOfFacts = [
    ["Status", [statusBadge(e.status), e.cancel_requested && !isTerminal(e.status) ? " (cancel requested)" : null]],
    ["Progress", [h("progress", { max: e.progress.total, value: e.progress.done }, `${e.progress.percent}%`), ` ${progressText(e)} examples`]],
    ["Dataset", h("code", {}, e.dataset_id)],
    ["Models", e.models.map((m, i) => [i ? " vs " : "", h("code", {}, m.model), ` (${label(m.role)})`])],
    ["Metrics", e.metrics.map((m) => (METRICS[m] ? METRICS[m].name : m)).join(", ")],
    ["Created", when(e.created_at)],
    ["Finished", when(e.finished_at)],
  ];
  if (e.job_id) rowsOfFacts.push(["Job", h("a", { href: `#jobs/${encodeURIComponent(e.job_id)}` }, e.job_id)]);
  if (e.grader) rowsOfFacts.push(["Grader", h("code", {}, e.grader.model)]);
  return [
    e.error
      ? h("div", { class: "problem", role: "alert" }, h("p", {}, h("strong", {}, "The evaluation failed: "), e.error.message))
      : null,
    h("dl", { class: "facts" }, rowsOfFacts.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
    scoresTable(e.summary, e.metrics),
  ];
}

function actions(e) {
  if (isTerminal(e.status)) return [];
  return h(
    "button",
    {
      type: "button",
      class: "danger",
      disabled: e.cancel_requested,
      onclick: async (event) => {
        event.target.disabled = true;
        try {
          await call(`/evaluations/${encodeURIComponent(e.id)}/cancel`, { method: "POST" });
          announce(`Cancel requested for ${e.id}`);
        } catch (error) {
          showProblem($("evaluation-detail-problem"), error, { heading: "Cancel refused" });
        }
        await refreshDetail(selection).catch(() => {});
      },
    },
    e.cancel_requested ? "Cancel requested" : "Cancel evaluation",
  );
}

function question(row) {
  const users = row.prompt.filter((m) => m.role === "user");
  const last = users.length ? users[users.length - 1].content : "";
  return typeof last === "string" ? last : JSON.stringify(last);
}

function rowsTable(e) {
  if (!rows.data.length) return h("p", { class: "empty" }, "No example scored yet.");
  const primary = e.metrics.includes("grader") ? "grader" : "chrf";
  return [
    table(
      `Examples in dataset order (${METRICS[primary].name} per answer)`,
      ["#", "Question", "Reference", ...e.models.map((m) => m.model)],
      rows.data.map((row) => [
        String(row.index + 1),
        row.skipped ? h("span", { class: "muted" }, `skipped: ${row.skipped}`) : question(row),
        row.reference ?? "—",
        ...e.models.map((m) => {
          const answer = row.answers.find((a) => a.model === m.model);
          if (!answer) return "—";
          if (answer.error) return h("span", { class: "problem" }, answer.error.message);
          const score = answer.scores[primary];
          return [
            answer.content ?? "",
            h("br"),
            h("span", { class: "muted small" }, score === null || score === undefined ? "no score" : `${METRICS[primary].name} ${score.toFixed(1)}`),
            answer.grader_reason ? h("span", { class: "muted small" }, ` · ${answer.grader_reason}`) : null,
          ];
        }),
      ]),
      { className: "evaluation-rows" },
    ),
    rows.more
      ? h("button", { type: "button", class: "secondary", onclick: () => loadRows(e, { more: true }).catch(() => {}) }, "Show more examples")
      : null,
  ];
}

async function loadRows(e, { more = false } = {}) {
  if (rows.forId !== e.id) rows = { data: [], more: false, forId: e.id };
  const after = more && rows.data.length ? `&after=${rows.data[rows.data.length - 1].index}` : "";
  const limit = more ? ROWS_PER_PAGE : Math.max(ROWS_PER_PAGE, rows.data.length);
  const page = await call(`/evaluations/${encodeURIComponent(e.id)}/results?limit=${Math.min(limit, 100)}${after}`);
  rows.data = more ? [...rows.data, ...page.data] : page.data;
  rows.more = page.has_more;
  show($("evaluation-rows"), rowsTable(e));
}

async function refreshDetail(token) {
  const id = selectedId;
  let found;
  try {
    found = await call(`/evaluations/${encodeURIComponent(id)}`);
  } catch (error) {
    if (token !== selection) return;
    showProblem($("evaluation-detail-problem"), error, { heading: `Could not load ${id}` });
    if (error.status === 404) detail = { evaluation: null, finalised: true };
    throw error;
  }
  if (token !== selection) return;
  showProblem($("evaluation-detail-problem"), null);
  const before = detail && detail.evaluation;
  if (before && before.status !== found.status) announce(`Evaluation ${found.id} is now ${label(found.status)}`);
  detail = { evaluation: found, finalised: isTerminal(found.status) && Boolean(before && isTerminal(before.status)) };
  showIfChanged($("evaluation-summary"), JSON.stringify(found), () => facts(found));
  showIfChanged($("evaluation-actions"), JSON.stringify([found.status, found.cancel_requested]), () => actions(found));
  if (!before || before.progress.done !== found.progress.done || !rows.data.length) await loadRows(found);
}

async function select(id, { focus }) {
  if (id === selectedId && detail) {
    if (focus) $("evaluation-detail-title").focus();
    return;
  }
  selectedId = id;
  selection += 1;
  detail = null;
  rows = { data: [], more: false, forId: id };
  $("evaluation-detail").hidden = false;
  $("evaluation-detail-title").textContent = `Evaluation ${id}`;
  for (const part of ["evaluation-detail-problem", "evaluation-actions", "evaluation-rows"]) show($(part));
  show($("evaluation-summary"), h("p", { class: "muted" }, "Loading…"));
  renderList();
  if (focus) $("evaluation-detail-title").focus();
  await refreshDetail(selection).catch(() => {});
}

export const evaluationsView = {
  title: "Evaluations",
  heading: "evaluations-title",

  init() {
    wireForm();
    $("evaluations-refresh").addEventListener("click", () => loadEvaluations().catch(() => {}));
  },

  async enter(arg, { focus }) {
    await Promise.all([loadChoices().catch(() => {}), loadEvaluations().catch(() => {})]);
    if (arg) await select(arg, { focus });
    else if (focus) $("evaluations-title").focus();
  },

  leave() {},

  async poll() {
    await loadEvaluations();
    if (selectedId && (!detail || !detail.finalised)) await refreshDetail(selection);
    const busy = evaluations.some((e) => !isTerminal(e.status)) || (detail && !detail.finalised);
    return busy ? FAST_POLL_MS : SLOW_POLL_MS;
  },
};
