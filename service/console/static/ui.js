// DOM helpers. Everything the service sends is put in the page as text, never
// as markup, so a dataset name or a model answer cannot inject anything.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// What each container last showed (kept out of the DOM: it can be a whole metrics series).
const shown = new WeakMap();

export function show(container, ...children) {
  shown.delete(container);
  container.replaceChildren();
  append(container, children);
}

// Redraws `container` only when `key` changed since the last time, so polling
// does not steal focus or the reader's place when nothing happened.
export function showIfChanged(container, key, build) {
  if (shown.get(container) === key) return false;
  show(container, build());
  shown.set(container, key);
  return true;
}

const numbers = new Intl.NumberFormat(undefined);

export function count(value) {
  return value === null || value === undefined ? "—" : numbers.format(value);
}

export function money(amount, currency = "USD") {
  if (amount === null || amount === undefined) return "—";
  return new Intl.NumberFormat(undefined, {
    style: "currency",
    currency,
    minimumFractionDigits: 2,
    maximumFractionDigits: amount < 1 ? 4 : 2,
  }).format(amount);
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return h("time", { datetime: iso, title: iso }, date.toLocaleString());
}

export function label(status) {
  return String(status).replaceAll("_", " ");
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, label(status));
}

export function announce(text) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  // A tick later, so the same words twice in a row are still read out.
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

// A table that scrolls sideways on a narrow screen; the wrapper is focusable so
// keyboard users can scroll it too.
export function table(caption, columns, rows, { className = "" } = {}) {
  const captionId = `t-${Math.random().toString(36).slice(2, 10)}`;
  return h(
    "div",
    { class: "table-wrap", role: "region", tabindex: "0", "aria-labelledby": captionId },
    h(
      "table",
      { class: className },
      h("caption", { id: captionId }, caption),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      h(
        "tbody",
        {},
        rows.map((cells) => h("tr", {}, cells.map((cell, i) => (i === 0 ? h("th", { scope: "row" }, cell) : h("td", {}, cell))))),
      ),
    ),
  );
}

// Located issues ({line, path, code, message}) as the API reports them.
export function issuesTable(caption, issues) {
  return table(
    caption,
    ["Line", "Field", "Problem", "Code"],
    // No line and no field: a problem of the whole file (too few examples, too large).
    issues.map((i) => [i.line ?? (i.path ? "—" : "whole file"), i.path ?? "—", i.message, h("code", {}, i.code)]),
    { className: "issues" },
  );
}

// A problem document, readably: its title and detail, every located error, and
// the request id to quote when reporting it.
export function problemBox(problem, { heading } = {}) {
  const issues = Array.isArray(problem.errors) ? problem.errors : [];
  const total = problem.error_total ?? issues.length;
  const title = problem.status ? `${problem.title} (${problem.status})` : problem.title;
  return h(
    "div",
    { class: "problem", role: "alert" },
    h("p", { class: "problem-title" }, h("strong", {}, heading ? `${heading}: ${title}` : title)),
    problem.detail ? h("p", { class: "problem-detail" }, problem.detail) : null,
    issues.length
      ? issuesTable(
          total > issues.length
            ? `Problems found (the first ${issues.length} of ${count(total)})`
            : `Problems found (${count(total)})`,
          issues,
        )
      : null,
    problem.code || problem.instance
      ? h(
          "p",
          { class: "problem-meta muted" },
          problem.code ? ["Code ", h("code", {}, problem.code)] : null,
          problem.code && problem.instance ? " · " : null,
          problem.instance ? ["Request ", h("code", {}, problem.instance)] : null,
        )
      : null,
  );
}

export function showProblem(container, error, options) {
  if (!error) {
    show(container);
    return;
  }
  const problem = error.problem || { title: "Something went wrong", detail: String(error.message || error) };
  // The same problem again (a poll failing twice) is not redrawn or announced
  // again, although each answer has its own request id.
  const { instance, ...same } = problem;
  const key = JSON.stringify(same);
  showIfChanged(container, key, () => problemBox(problem, options));
}
