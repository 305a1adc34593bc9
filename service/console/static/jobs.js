// Jobs: start one, follow every job's status live (by polling), and see one
// job's stages, training progress, loss curve, checkpoints, events and the
// evaluation it started when it succeeded.

import { call, listAll } from "./api.js";
import { lossChart } from "./chart.js";
import { scoresTable } from "./evaluations.js";
import {
  announce,
  count,
  h,
  label,
  show,
  showIfChanged,
  showProblem,
  statusBadge,
  table,
  when,
} from "./ui.js";

const $ = (id) => document.getElementById(id);

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
// The way a job normally goes; a status not listed here is shown as it comes.
const STAGES = ["pending", "uploading", "validating_files", "queued", "running", "succeeded"];
const FAST_POLL_MS = 2000;
const SLOW_POLL_MS = 15000;

let navigate = () => {};
let jobs = [];
let jobsMore = false;
let datasets = [];
let lastStatuses = new Map();
let selectedId = null;
let selection = 0; // bumps on every new selection, so a late answer for an old one is dropped
let detail = null; // { job, finalised } of the selected job
let visible = false;

const isTerminal = (status) => TERMINAL.has(status);

// ---- the start form ----

function fillDatasetSelect(preferred) {
  const select = $("job-dataset");
  const current = preferred || select.value;
  const ready = datasets.filter((d) => d.status === "ready" && d.role === "training");
  const key = JSON.stringify(ready.map((d) => [d.id, d.name, d.example_count]));
  if (select.dataset.renderKey !== key) {
    select.dataset.renderKey = key;
    select.replaceChildren(
      ready.length
        ? h("option", { value: "" }, "Choose a dataset")
        : h("option", { value: "" }, "No dataset is ready: upload one first"),
      ...ready.map((d) => h("option", { value: d.id }, `${d.name} · ${count(d.example_count)} examples (${d.id})`)),
    );
  }
  if (current && ready.some((d) => d.id === current)) select.value = current;
  select.disabled = !ready.length;
}

function chooseDataset(datasetId) {
  fillDatasetSelect(datasetId);
  const dataset = datasets.find((d) => d.id === datasetId);
  if (dataset) $("job-model").value = dataset.model;
}

async function loadDatasets() {
  const page = await listAll("/datasets", { max: 200 });
  datasets = page.data;
  fillDatasetSelect();
}

function wireForm() {
  const form = $("job-form");
  const result = $("job-form-result");
  $("job-dataset").addEventListener("change", (event) => chooseDataset(event.target.value));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const dataset = datasets.find((d) => d.id === form.elements.dataset_id.value);
    const model = form.elements.model.value.trim();
    const missing = !dataset ? $("job-dataset") : !model ? $("job-model") : null;
    if (missing) {
      missing.setAttribute("aria-invalid", "true");
      show(result, h("p", { class: "problem", role: "alert" }, !dataset ? "Choose a dataset to train on." : "Name the base model to train."));
      missing.focus();
      return;
    }
    $("job-dataset").removeAttribute("aria-invalid");
    $("job-model").removeAttribute("aria-invalid");
    const epochs = form.elements.n_epochs.value.trim();
    const body = {
      dataset_id: dataset.id,
      model,
      method: {
        type: dataset.kind === "preference" ? "dpo" : "supervised",
        hyperparameters: epochs ? { n_epochs: Number(epochs) } : {},
      },
    };
    const suffix = form.elements.suffix.value.trim();
    if (suffix) body.suffix = suffix;
    if (dataset.validation_dataset_id) body.validation_dataset_id = dataset.validation_dataset_id;

    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    show(result, h("p", { class: "muted", role: "status" }, "Starting the job…"));
    try {
      // One key per click: a retried request can never start a second paid job.
      const job = await call("/jobs", {
        method: "POST",
        json: body,
        headers: { "Idempotency-Key": crypto.randomUUID() },
      });
      show(result, h("p", { role: "status" }, `Started ${job.id}; it is ${label(job.status)}.`));
      announce(`Job ${job.id} started`);
      lastStatuses.set(job.id, job.status);
      navigate("jobs", job.id);
    } catch (error) {
      showProblem(result, error, { heading: "The job was not started" });
    } finally {
      button.disabled = false;
    }
  });
}

// ---- the list ----

// Says a job's new status out loud once, whichever poll sees it first.
function noteStatus(job) {
  const before = lastStatuses.get(job.id);
  if (before && before !== job.status && visible) announce(`Job ${job.id} is now ${label(job.status)}`);
  lastStatuses.set(job.id, job.status);
}

function renderList() {
  const key = JSON.stringify([jobs.map((j) => [j.id, j.status, j.fine_tuned_model]), selectedId, jobsMore]);
  showIfChanged($("jobs-list"), key, () => {
    if (!jobs.length) return h("p", { class: "empty" }, "No jobs yet. Start one above.");
    return [
      table(
        "Jobs, newest first",
        ["Job and models", "Status", "Created"],
        jobs.map((job) => [
          [
            h("a", { href: `#jobs/${encodeURIComponent(job.id)}`, "aria-current": job.id === selectedId ? "true" : null }, job.id),
            h("br"),
            h("span", { class: "muted small" }, job.model, job.fine_tuned_model ? [" → ", h("code", {}, job.fine_tuned_model)] : null),
          ],
          statusBadge(job.status),
          when(job.created_at),
        ]),
        { className: "jobs" },
      ),
      jobsMore ? h("p", { class: "muted" }, "Showing the newest 200 jobs.") : null,
    ];
  });
}

async function loadJobs() {
  try {
    const page = await listAll("/jobs", { max: 200 });
    jobs = page.data;
    jobsMore = page.more;
    showProblem($("jobs-problem"), null);
  } catch (error) {
    showProblem($("jobs-problem"), error, { heading: "Could not list jobs" });
    throw error;
  }
  jobs.forEach(noteStatus);
  renderList();
}

// ---- one job ----

function progressText(progress) {
  const total = progress.total_steps ? ` of ${count(progress.total_steps)}` : "";
  const percent = progress.percent != null ? ` (${progress.percent}%)` : "";
  const finish = progress.estimated_finish ? [" · ends about ", when(progress.estimated_finish)] : "";
  return [`Step ${count(progress.step)}${total}${percent}`, finish];
}

function facts(job) {
  const rows = [
    ["Status", [statusBadge(job.status), job.cancel_requested && !isTerminal(job.status) ? " (cancel requested)" : null]],
    ["Dataset", h("code", {}, job.dataset_id)],
    ["Base model", job.model],
    ["Tuned model", job.fine_tuned_model ? h("code", {}, job.fine_tuned_model) : "not yet"],
    ["Provider", [job.provider.name, job.provider.status ? ` · ${job.provider.status}` : "", job.provider.job_id ? [" · ", h("code", {}, job.provider.job_id)] : ""]],
    ["Created", when(job.created_at)],
    ["Finished", when(job.finished_at)],
  ];
  if (job.suffix) rows.push(["Suffix", job.suffix]);
  if (job.trained_tokens) rows.push(["Trained tokens", count(job.trained_tokens)]);
  if (job.progress && !isTerminal(job.status)) rows.push(["Progress", progressText(job.progress)]);
  if (job.validation_dataset_id) rows.push(["Validation dataset", h("code", {}, job.validation_dataset_id)]);
  const evaluation = job.evaluation;
  if (evaluation) {
    rows.push([
      "Evaluation",
      [
        statusBadge(evaluation.status),
        ` ${count(evaluation.progress.done)} of ${count(evaluation.progress.total)} held-out examples · `,
        h("a", { href: `#evaluations/${encodeURIComponent(evaluation.id)}` }, "see every answer"),
      ],
    ]);
  }
  return h(
    "div",
    {},
    job.error
      ? h(
          "div",
          { class: "problem", role: "alert" },
          h("p", {}, h("strong", {}, "The job failed: "), job.error.message),
          h("p", { class: "muted" }, "Code ", h("code", {}, job.error.code)),
        )
      : null,
    h("dl", { class: "facts" }, rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
    evaluation && evaluation.summary
      ? [h("h4", {}, "Tuned against base, on held-out examples"), scoresTable(evaluation.summary, ["exact_match", "chrf"])]
      : null,
  );
}

// The stages to draw: the usual way to the current status. A job that failed or
// was cancelled shows the way it really went, up to the status it left (the
// `from` of its final status event), then how it ended.
function stagesOf(job, events) {
  if (STAGES.includes(job.status)) return [...STAGES];
  if (!isTerminal(job.status)) {
    // paused, or a status this page does not know yet: after running
    const stages = [...STAGES];
    stages.splice(stages.indexOf("running") + 1, 0, job.status);
    return stages;
  }
  const final = events.data.find((e) => e.type === "status" && e.data && e.data.to === job.status);
  const left = final && final.data.from;
  const passed = STAGES.includes(left) ? STAGES.slice(0, STAGES.indexOf(left) + 1) : left ? [left] : [];
  return [...passed, job.status];
}

function progress(job, metrics, stages) {
  const reached = stages.indexOf(job.status);
  const steps = metrics && metrics.data.length ? metrics.data[metrics.data.length - 1].step : 0;
  const total = metrics && metrics.total_steps;
  let bar = null;
  if (total) {
    const done = job.status === "succeeded" ? total : Math.min(steps, total);
    bar = h(
      "div",
      { class: "field" },
      h("label", { for: "job-steps" }, `Training step ${count(done)} of ${count(total)}`),
      h("progress", { id: "job-steps", max: total, value: done }, `${Math.round((done / total) * 100)}%`),
    );
  }
  return [
    h(
      "ol",
      { class: "stages", "aria-label": "Stages" },
      stages.map((stage, i) =>
        h(
          "li",
          {
            class: i < reached ? "done" : i === reached ? `current status-${stage}` : "todo",
            "aria-current": i === reached ? "step" : null,
          },
          label(stage),
          i < reached ? h("span", { class: "visually-hidden" }, " (done)") : null,
        ),
      ),
    ),
    bar,
  ];
}

function actions(job) {
  const buttons = [];
  if (!isTerminal(job.status)) {
    buttons.push(
      h(
        "button",
        {
          type: "button",
          class: "danger",
          disabled: job.cancel_requested,
          onclick: async (event) => {
            if (!window.confirm(`Cancel ${job.id}? A cancelled job cannot be resumed.`)) return;
            event.target.disabled = true;
            try {
              const answer = await call(`/jobs/${encodeURIComponent(job.id)}/cancel`, { method: "POST" });
              announce(answer.status === "cancelled" ? `Job ${job.id} cancelled` : `Cancel requested for ${job.id}`);
              showProblem($("job-detail-problem"), null);
            } catch (error) {
              showProblem($("job-detail-problem"), error, { heading: "Cancel refused" });
            }
            await refreshDetail(selection).catch(() => {});
            await loadJobs().catch(() => {});
          },
        },
        job.cancel_requested ? "Cancel requested" : "Cancel job",
      ),
    );
  }
  if (job.fine_tuned_model) {
    buttons.push(h("a", { class: "button", href: `#chat/${encodeURIComponent(job.id)}` }, "Chat with this model"));
  }
  return buttons;
}

function checkpointsTable(checkpoints) {
  if (!checkpoints.data.length) return h("p", { class: "empty" }, "No checkpoints yet.");
  const metric = (c, name) => (typeof c.metrics[name] === "number" ? c.metrics[name].toFixed(3) : "—");
  return table(
    "Checkpoints, latest step first",
    ["Step", "Checkpoint model", "Training loss", "Validation loss", "Created"],
    checkpoints.data.map((c) => [
      count(c.step_number),
      h("code", {}, c.fine_tuned_model_checkpoint),
      metric(c, "train_loss"),
      metric(c, "valid_loss"),
      when(c.created_at),
    ]),
    { className: "checkpoints" },
  );
}

function timeline(events) {
  if (!events.data.length) return h("p", { class: "empty" }, "No events yet.");
  return [
    h(
      "ol",
      // Focusable, so the scrolling list can be scrolled from the keyboard.
      { class: "timeline", "aria-label": "Events, newest first", tabindex: "0" },
      events.data.map((event) =>
        h(
          "li",
          { class: `event level-${event.level}` },
          when(event.created_at),
          " ",
          h("span", { class: `badge level-${event.level}` }, event.level),
          " ",
          h("span", { class: "message" }, event.message),
          h("span", { class: "muted small" }, ` · ${event.source}`),
        ),
      ),
    ),
    events.has_more ? h("p", { class: "muted" }, "Showing the newest 100 events.") : null,
  ];
}

async function refreshDetail(token) {
  const id = selectedId;
  const base = `/jobs/${encodeURIComponent(id)}`;
  let job;
  try {
    job = await call(base);
  } catch (error) {
    if (token !== selection) return;
    showProblem($("job-detail-problem"), error, { heading: `Could not load ${id}` });
    if (error.status === 404) {
      detail = { job: null, finalised: true }; // nothing to follow: stop asking
      for (const part of ["job-summary", "job-progress", "job-actions", "job-chart", "job-checkpoints", "job-events"]) show($(part));
    }
    throw error;
  }
  const [events, metrics, checkpoints] = await Promise.all([
    call(`${base}/events?limit=100`),
    call(`${base}/metrics`),
    call(`${base}/checkpoints`),
  ]);
  if (token !== selection) return;
  showProblem($("job-detail-problem"), null);
  noteStatus(job);
  // A final state is fetched once more after it is first seen, then left alone.
  const seenFinal = Boolean(detail && detail.job && detail.job.id === job.id && isTerminal(detail.job.status));
  detail = { job, finalised: isTerminal(job.status) && seenFinal };
  showIfChanged($("job-summary"), JSON.stringify(job), () => facts(job));
  const stages = stagesOf(job, events);
  showIfChanged($("job-progress"), JSON.stringify([job.status, stages, metrics.total_steps, metrics.data.length]), () =>
    progress(job, metrics, stages),
  );
  showIfChanged($("job-actions"), JSON.stringify([job.id, job.status, job.cancel_requested, job.fine_tuned_model]), () => actions(job));
  showIfChanged($("job-chart"), JSON.stringify(metrics), () => lossChart(metrics));
  showIfChanged($("job-checkpoints"), JSON.stringify(checkpoints), () => checkpointsTable(checkpoints));
  showIfChanged($("job-events"), JSON.stringify(events), () => timeline(events));
}

async function select(jobId, { focus }) {
  if (jobId === selectedId && detail) {
    if (focus) $("job-detail-title").focus();
    return;
  }
  selectedId = jobId;
  selection += 1;
  detail = null;
  const panel = $("job-detail");
  panel.hidden = false;
  $("job-detail-title").textContent = `Job ${jobId}`;
  for (const part of ["job-detail-problem", "job-summary", "job-progress", "job-actions", "job-chart", "job-checkpoints", "job-events"]) show($(part));
  show($("job-summary"), h("p", { class: "muted" }, "Loading…"));
  renderList();
  if (focus) $("job-detail-title").focus();
  await refreshDetail(selection).catch(() => {});
}

export const jobsView = {
  title: "Jobs",
  heading: "jobs-title",

  init(context) {
    navigate = context.navigate;
    wireForm();
    $("jobs-refresh").addEventListener("click", () => loadJobs().catch(() => {}));
  },

  async enter(arg, { focus, prefill }) {
    visible = true;
    await Promise.all([loadDatasets().catch(() => {}), loadJobs().catch(() => {})]);
    if (prefill && prefill.datasetId) {
      chooseDataset(prefill.datasetId);
      if (focus) $("job-dataset").focus();
      focus = false;
    }
    if (arg) await select(arg, { focus });
    else if (focus) $("jobs-title").focus();
  },

  leave() {
    visible = false;
  },

  async poll() {
    await loadJobs();
    // A succeeded job is still looked at while its evaluation runs.
    const evaluating = Boolean(detail && detail.job && detail.job.evaluation && !isTerminal(detail.job.evaluation.status));
    if (selectedId && (!detail || !detail.finalised || evaluating)) await refreshDetail(selection);
    const busy = jobs.some((j) => !isTerminal(j.status)) || (detail && !detail.finalised) || evaluating;
    return busy ? FAST_POLL_MS : SLOW_POLL_MS;
  },
};
