// The loss curve of a job, drawn as SVG from GET /jobs/{id}/metrics. Colours
// come from the stylesheet; the numbers are also offered as a table.

import { h, table } from "./ui.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const HEIGHT = 300;
const MARGIN = { left: 56, right: 16, top: 16, bottom: 44 };
const MAX_TABLE_ROWS = 1000;

const SERIES = [
  { key: "train_loss", label: "Training loss", className: "series-train" },
  { key: "valid_loss", label: "Validation loss", className: "series-valid" },
  { key: "full_valid_loss", label: "Full validation loss", className: "series-full-valid" },
];

let chartCount = 0;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child);
  return node;
}

// About `wanted` round steps (1, 2 or 5 times a power of ten) covering [low, high].
function ticks(low, high, wanted, { integers = false } = {}) {
  const span = high - low || 1;
  let step = 10 ** Math.floor(Math.log10(span / wanted));
  for (const factor of [1, 2, 5, 10]) {
    if (span / (step * factor) <= wanted) {
      step *= factor;
      break;
    }
  }
  if (integers) step = Math.max(1, Math.round(step));
  const found = [];
  for (let value = Math.ceil(low / step) * step; value <= high + step * 1e-9; value += step) {
    found.push(Number(value.toPrecision(12)));
  }
  return found;
}

const loss = (value) => (Math.abs(value) >= 100 ? value.toFixed(0) : value.toFixed(3));

function describe(series, lastStep, totalSteps) {
  const parts = series.map((s) => {
    const [firstStep, first] = s.values[0];
    const [endStep, end] = s.values[s.values.length - 1];
    return `${s.label} from ${loss(first)} at step ${firstStep} to ${loss(end)} at step ${endStep}`;
  });
  const progress = totalSteps ? ` Step ${lastStep} of ${totalSteps}.` : "";
  return `${parts.join("; ")}.${progress}`;
}

export function lossChart(metrics) {
  const points = metrics.data || [];
  const series = SERIES.map((s) => ({
    ...s,
    values: points.filter((p) => typeof p[s.key] === "number").map((p) => [p.step, p[s.key]]),
  })).filter((s) => s.values.length);
  if (!series.length) {
    return h("p", { class: "empty" }, "No training metrics yet; the curve appears once training reports its first steps.");
  }

  const lastStep = points[points.length - 1].step;
  const xLow = Math.min(...series.map((s) => s.values[0][0]), 1);
  const xHigh = Math.max(lastStep, metrics.total_steps || 0, xLow + 1);
  const yHigh = Math.max(...series.flatMap((s) => s.values.map(([, v]) => v))) * 1.05 || 1;
  const yLow = Math.min(0, ...series.flatMap((s) => s.values.map(([, v]) => v)));
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const x = (step) => MARGIN.left + ((step - xLow) / (xHigh - xLow)) * plotWidth;
  const y = (value) => MARGIN.top + (1 - (value - yLow) / (yHigh - yLow)) * plotHeight;

  chartCount += 1;
  const titleId = `loss-chart-title-${chartCount}`;
  const descId = `loss-chart-desc-${chartCount}`;
  const chart = svg("svg", {
    class: "loss-chart",
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-labelledby": `${titleId} ${descId}`,
    preserveAspectRatio: "xMidYMid meet",
  });
  const title = svg("title", { id: titleId });
  title.textContent = "Loss by training step";
  const desc = svg("desc", { id: descId });
  desc.textContent = describe(series, lastStep, metrics.total_steps);
  chart.append(title, desc);

  const grid = svg("g", { class: "grid", "aria-hidden": "true" });
  for (const value of ticks(yLow, yHigh, 5)) {
    grid.append(svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value), y2: y(value) }));
    const text = svg("text", { x: MARGIN.left - 8, y: y(value), class: "tick y" });
    text.textContent = String(Number(value.toFixed(3)));
    grid.append(text);
  }
  for (const value of ticks(xLow, xHigh, 6, { integers: true })) {
    const text = svg("text", { x: x(value), y: HEIGHT - MARGIN.bottom + 18, class: "tick x" });
    text.textContent = String(value);
    grid.append(text);
  }
  const xTitle = svg("text", { x: MARGIN.left + plotWidth / 2, y: HEIGHT - 6, class: "axis-title" });
  xTitle.textContent = "Step";
  const yTitle = svg("text", {
    x: 14,
    y: MARGIN.top + plotHeight / 2,
    class: "axis-title",
    transform: `rotate(-90 14 ${MARGIN.top + plotHeight / 2})`,
  });
  yTitle.textContent = "Loss";
  grid.append(
    svg("line", { class: "axis", x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: MARGIN.top + plotHeight }),
    svg("line", {
      class: "axis",
      x1: MARGIN.left,
      x2: WIDTH - MARGIN.right,
      y1: MARGIN.top + plotHeight,
      y2: MARGIN.top + plotHeight,
    }),
    xTitle,
    yTitle,
  );
  chart.append(grid);

  for (const s of series) {
    const d = s.values.map(([step, value], i) => `${i ? "L" : "M"}${x(step).toFixed(1)},${y(value).toFixed(1)}`).join(" ");
    const group = svg("g", { class: `series ${s.className}`, "aria-hidden": "true" });
    group.append(svg("path", { d, class: `line ${s.className}`, "data-points": s.values.length }));
    if (s.values.length <= 60) {
      for (const [step, value] of s.values) group.append(svg("circle", { cx: x(step), cy: y(value), r: 2.5 }));
    }
    chart.append(group);
  }

  const legend = h(
    "ul",
    { class: "legend" },
    series.map((s) => h("li", {}, h("span", { class: `swatch ${s.className}`, "aria-hidden": "true" }), s.label)),
  );
  const rows = points.slice(-MAX_TABLE_ROWS);
  const data = h(
    "details",
    { class: "chart-data" },
    h("summary", {}, "The numbers"),
    table(
      rows.length < points.length ? `The last ${rows.length} of ${points.length} steps` : "Loss and accuracy by step",
      ["Step", ...series.map((s) => s.label), "Training accuracy"],
      rows.map((p) => [
        String(p.step),
        ...series.map((s) => (typeof p[s.key] === "number" ? loss(p[s.key]) : "—")),
        typeof p.train_mean_token_accuracy === "number" ? p.train_mean_token_accuracy.toFixed(3) : "—",
      ]),
    ),
  );
  return h("figure", { class: "chart" }, chart, h("figcaption", {}, legend), data);
}
