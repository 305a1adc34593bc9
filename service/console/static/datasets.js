// Datasets: upload (drag and drop or the file input), the API's verdict line
// by line, and the list with examples, tokens, estimated cost and warnings.

import { call, listAll } from "./api.js";
import {
  announce,
  count,
  h,
  issuesTable,
  money,
  show,
  showIfChanged,
  showProblem,
  statusBadge,
  table,
  when,
} from "./ui.js";

const $ = (id) => document.getElementById(id);

let datasets = [];
let hasMore = false;
let navigate = () => {};

function costOf(estimate) {
  if (!estimate) return "—";
  if (estimate.cost_usd === null || estimate.cost_usd === undefined) {
    return h("span", { title: `No price for ${estimate.model}` }, "no price");
  }
  return [
    money(estimate.cost_usd, estimate.currency || "USD"),
    h("span", { class: "muted" }, ` · ${estimate.n_epochs} epoch${estimate.n_epochs === 1 ? "" : "s"}`),
  ];
}

function warningsOf(dataset) {
  const totals = Object.entries(dataset.warning_totals || {});
  const total = totals.reduce((sum, [, n]) => sum + n, 0);
  if (!total) return "none";
  return h(
    "details",
    { class: "issues-details" },
    h(
      "summary",
      {},
      `${count(total)} warning${total === 1 ? "" : "s"} `,
      h("span", { class: "muted" }, `(${totals.map(([code, n]) => `${code} ${n}`).join(", ")})`),
    ),
    issuesTable(`Warnings of ${dataset.name}`, dataset.warnings || []),
  );
}

function errorsOf(dataset) {
  if (!dataset.error_total) return null;
  return h(
    "details",
    { class: "issues-details" },
    h("summary", {}, `${count(dataset.error_total)} error${dataset.error_total === 1 ? "" : "s"}`),
    issuesTable(`Errors of ${dataset.name}`, dataset.errors || []),
  );
}

function nameCell(dataset) {
  return [
    h("span", { class: "name" }, dataset.name),
    h("br"),
    h("code", { class: "muted small" }, dataset.id),
    dataset.role === "validation" ? h("span", { class: "muted small" }, " · validation split") : null,
  ];
}

function actionsOf(dataset) {
  if (dataset.status !== "ready" || dataset.role !== "training") return null;
  return h(
    "button",
    {
      type: "button",
      class: "small",
      "aria-label": `Train a model on ${dataset.name}`,
      onclick: () => navigate("jobs", null, { datasetId: dataset.id }),
    },
    "Train…",
  );
}

function renderList() {
  const container = $("datasets-list");
  const key = JSON.stringify([datasets, hasMore]);
  showIfChanged(container, key, () => {
    if (!datasets.length) {
      return h("p", { class: "empty" }, "No datasets yet. Upload one above.");
    }
    return [
      table(
        "Datasets, newest first",
        ["Name", "Status", "Examples", "Tokens", "Estimated cost", "Warnings", "Created", "Actions"],
        datasets.map((d) => [
          nameCell(d),
          [statusBadge(d.status), errorsOf(d)],
          count(d.example_count),
          count(d.token_count),
          costOf(d.estimate),
          warningsOf(d),
          when(d.created_at),
          actionsOf(d),
        ]),
        { className: "datasets" },
      ),
      hasMore ? h("p", { class: "muted" }, "Showing the newest 200 datasets.") : null,
    ];
  });
}

async function refresh() {
  try {
    const page = await listAll("/datasets", { max: 200 });
    datasets = page.data;
    hasMore = page.more;
    showProblem($("datasets-problem"), null);
    renderList();
  } catch (error) {
    showProblem($("datasets-problem"), error, { heading: "Could not list datasets" });
    throw error;
  }
}

function summary(title, body) {
  const stats = body.token_stats;
  const facts = [
    ["Examples", count(body.example_count)],
    ["Tokens", count(body.token_count)],
    ["Estimated cost", costOf(body.estimate)],
    ["Target model", body.model],
    ["Format", body.format ?? "—"],
  ];
  if (stats) facts.push(["Tokens per example", `${count(stats.min)}–${count(stats.max)}, median ${count(stats.p50)}`]);
  const warnings = body.warnings || [];
  return h(
    "div",
    { class: "outcome" },
    h("p", {}, h("strong", {}, title)),
    h("dl", { class: "facts" }, facts.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
    warnings.length ? issuesTable(`Warnings (${count(warnings.length)})`, warnings) : null,
    body.errors && body.errors.length ? issuesTable(`Errors (${count(body.error_total)})`, body.errors) : null,
  );
}

function describeFile(file) {
  return file ? `Selected: ${file.name} (${count(Math.ceil(file.size / 1024))} KB)` : "";
}

function wireUpload() {
  const form = $("upload-form");
  const input = $("upload-file");
  const zone = $("dropzone");
  const chosen = $("upload-chosen");
  const result = $("upload-result");

  input.addEventListener("change", () => {
    chosen.textContent = describeFile(input.files[0]);
  });

  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("dragging");
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    const picked = new DataTransfer();
    picked.items.add(files[0]);
    input.files = picked.files;
    chosen.textContent = describeFile(input.files[0]);
    input.focus();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const dryRun = event.submitter && event.submitter.dataset.action === "validate";
    const file = input.files[0];
    if (!file) {
      input.setAttribute("aria-invalid", "true");
      show(result, h("p", { class: "problem", role: "alert" }, "Choose a file or drop one on the box first."));
      input.focus();
      return;
    }
    input.removeAttribute("aria-invalid");
    const body = new FormData();
    for (const name of ["name", "model", "system_prompt"]) {
      const value = form.elements[name].value.trim();
      if (value) body.append(name, value);
    }
    body.append("file", file, file.name);

    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    result.setAttribute("aria-busy", "true");
    show(result, h("p", { class: "muted", role: "status" }, `${dryRun ? "Checking" : "Uploading and checking"} ${file.name}…`));
    try {
      const answer = await call(dryRun ? "/datasets/validate" : "/datasets", { method: "POST", body });
      if (dryRun) {
        const verdict = answer.ok ? "The file is valid; nothing was stored." : "The file has errors; nothing was stored.";
        show(result, summary(verdict, answer));
        announce(verdict);
      } else if (answer.status === "validating") {
        show(result, h("p", { role: "status" }, `${answer.name} is stored and being validated in the background; the list shows when it is ready.`));
        announce(`${answer.name} is being validated`);
      } else {
        show(result, summary(`Stored ${answer.name} (${answer.id}).`, answer));
        announce(`Dataset ${answer.name} stored: ${answer.example_count} examples`);
      }
      if (!dryRun) {
        form.reset();
        chosen.textContent = "";
        await refresh().catch(() => {});
      }
    } catch (error) {
      showProblem(result, error, { heading: dryRun ? "Check failed" : "Upload refused" });
    } finally {
      result.removeAttribute("aria-busy");
      buttons.forEach((b) => (b.disabled = false));
    }
  });
}

export const datasetsView = {
  title: "Datasets",
  heading: "datasets-title",

  init(context) {
    navigate = context.navigate;
    wireUpload();
    $("datasets-refresh").addEventListener("click", () => refresh().catch(() => {}));
  },

  async enter() {
    await refresh().catch(() => {});
  },

  // Milliseconds until the next look: soon while one is still validating.
  async poll() {
    await refresh();
    return datasets.some((d) => d.status === "validating") ? 2000 : 15000;
  },
};
