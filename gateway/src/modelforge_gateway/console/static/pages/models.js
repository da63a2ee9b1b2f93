// Models: the registry's list, two to five of them side by side (overlaid loss and learning-rate
// curves, metrics and the settings that differ, from GET /api/compare), one model's details
// (metrics, settings, lineage when the gateway sends it, its tracking link) and deletion.

import { del, get, itemsOf } from "../api.js";
import { LineChart, formatNumber } from "../chart.js";
import { alertBox, fieldsTable, h, showError, showMessage, table, withBusy } from "../ui.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const MIN_COMPARED = 2;
const MAX_COMPARED = 5;
const WIDTH = 600;
const HEIGHT = 240;
const PAD = { left: 64, right: 12, top: 14, bottom: 30 };

function svgNode(name, attributes = {}, text = "") {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text) element.textContent = text;
  return element;
}

// One chart with a line per model (series-0 ... series-4 carry the colours) and, for the loss, each
// model's evaluation loss as a diamond at its last step.
function overlayChart(title, kind, series) {
  const svg = svgNode("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": title, class: `chart overlay ${kind}` });
  svg.append(svgNode("title", {}, title));
  const all = series.flatMap((s) => [...s.points, ...(s.marker ? [s.marker] : [])]);
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  svg.append(svgNode("rect", { x: PAD.left, y: PAD.top, width: plotW, height: plotH, class: "plot-area" }));
  svg.setAttribute("data-series", series.filter((s) => s.points.length).length);
  if (!all.length) {
    svg.append(svgNode("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "empty" }, "no recorded points"));
    return svg;
  }
  let [xMin, xMax] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [yMin, yMax] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (xMin === xMax) [xMin, xMax] = [xMin - 1, xMax + 1];
  if (yMin === yMax) [yMin, yMax] = [yMin - Math.abs(yMin || 1) * 0.1, yMax + Math.abs(yMax || 1) * 0.1];
  const sx = (x) => PAD.left + ((x - xMin) / (xMax - xMin)) * plotW;
  const sy = (y) => PAD.top + (1 - (y - yMin) / (yMax - yMin)) * plotH;
  for (const fraction of [0, 0.5, 1]) {
    const value = yMin + fraction * (yMax - yMin);
    svg.append(svgNode("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: sy(value), y2: sy(value), class: "grid" }));
    svg.append(svgNode("text", { x: PAD.left - 6, y: sy(value) + 4, "text-anchor": "end", class: "tick" }, formatNumber(value)));
  }
  svg.append(svgNode("text", { x: sx(xMin), y: HEIGHT - 10, "text-anchor": "start", class: "tick" }, `step ${Math.round(xMin)}`));
  svg.append(svgNode("text", { x: sx(xMax), y: HEIGHT - 10, "text-anchor": "end", class: "tick" }, `step ${Math.round(xMax)}`));
  series.forEach((s, index) => {
    const group = svgNode("g", { class: `series-${index}`, "data-label": s.label, "data-points": s.points.length });
    group.append(svgNode("title", {}, s.label));
    if (s.points.length) {
      group.append(svgNode("polyline", { class: "series", points: s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ") }));
      for (const [x, y] of s.points) {
        const dot = svgNode("circle", { cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 2.5, class: "point" });
        dot.append(svgNode("title", {}, `${s.label}, step ${x}: ${formatNumber(y)}`));
        group.append(dot);
      }
    }
    if (s.marker) {
      const [x, y] = s.marker;
      const [cx, cy] = [sx(x), sy(y)];
      const diamond = svgNode("polygon", { class: "eval", points: `${cx},${cy - 6} ${cx + 6},${cy} ${cx},${cy + 6} ${cx - 6},${cy}` });
      diamond.append(svgNode("title", {}, `${s.label}, evaluation loss: ${formatNumber(y)}`));
      group.append(diamond);
    }
    svg.append(group);
  });
  return svg;
}

function legend(models) {
  return h(
    "ul",
    { class: "legend" },
    models.map((model, index) => {
      const swatch = svgNode("svg", { viewBox: "0 0 12 12", width: 12, height: 12, class: `swatch series-${index}`, "aria-hidden": "true" });
      swatch.append(svgNode("rect", { x: 0, y: 0, width: 12, height: 12 }));
      return h("li", {}, swatch, ` ${model.name} (${model.model_id})`);
    }),
  );
}

// The comparison as GET /api/compare answers it: curves, metrics, and the settings that differ.
export function comparisonSection(answer) {
  const models = answer.models || [];
  const labels = models.map((m) => `${m.name} (${m.id})`);
  const evalLoss = (m) => m.metrics && (m.metrics.eval_loss ?? m.metrics.final_loss);
  const lastStep = (m) => (m.loss_curve.length ? m.loss_curve[m.loss_curve.length - 1].step : 0);
  const loss = overlayChart("Loss of each run by step", "loss", models.map((m, i) => ({
    label: labels[i],
    points: m.loss_curve.map((p) => [p.step, p.loss]),
    marker: Number.isFinite(evalLoss(m)) ? [lastStep(m), evalLoss(m)] : null,
  })));
  const rate = overlayChart("Learning rate of each run by step", "lr", models.map((m, i) => ({
    label: labels[i],
    points: m.loss_curve.filter((p) => Number.isFinite(p.learning_rate)).map((p) => [p.step, p.learning_rate]),
  })));
  const columns = [["setting", "Setting"], ...labels.map((label, i) => [String(i), label])];
  const rowsOf = (settings) => settings.map((row) => ({ setting: row.name, ...Object.fromEntries(row.values.map((v, i) => [String(i), v])) }));
  const differing = (answer.settings || []).filter((row) => row.differs);
  const settingsBox = h("div", { class: "compare-settings" });
  const showAll = h("input", { type: "checkbox", name: "all-settings" });
  const drawSettings = () => {
    const shown = showAll.checked ? answer.settings || [] : differing;
    settingsBox.replaceChildren(
      shown.length
        ? table(rowsOf(shown), columns, { caption: showAll.checked ? "All settings" : "Settings that differ" })
        : h("p", {}, "The runs were trained with the same settings."),
    );
  };
  showAll.addEventListener("change", drawSettings);
  drawSettings();
  const metricNames = [...new Set(models.flatMap((m) => Object.keys(m.metrics || {})))];
  const metrics = metricNames.map((name) => ({ setting: name, ...Object.fromEntries(models.map((m, i) => [String(i), (m.metrics || {})[name]])) }));
  const links = models.filter((m) => m.tracking_url);
  return h(
    "section",
    { class: "comparison", "aria-labelledby": "compare-h" },
    h("h2", { id: "compare-h" }, `Comparing ${models.length} runs`),
    legend(models),
    h("div", { class: "charts" },
      h("figure", {}, h("figcaption", {}, "Loss (diamonds: evaluation loss at the end)"), loss),
      h("figure", {}, h("figcaption", {}, "Learning rate"), rate)),
    h("label", { class: "inline" }, showAll, " Show every setting"),
    settingsBox,
    metrics.length ? table(metrics, columns, { caption: "Metrics" }) : null,
    links.length ? h("ul", { class: "tracking-links" }, links.map((m) => h("li", {}, `${m.name}: `, h("a", { href: m.tracking_url, rel: "noopener" }, "tracking run")))) : null,
  );
}

function comparePicker(models, output, box) {
  const boxes = models.map((m) =>
    h("input", { type: "checkbox", name: "compare", value: String(m.id), "aria-label": `Compare ${m.name} (${m.model_id})` }),
  );
  const button = h("button", { type: "button", disabled: true }, "Compare selected");
  const hint = h("small", { class: "muted" }, `Select ${MIN_COMPARED} to ${MAX_COMPARED} models.`);
  const update = () => {
    const count = boxes.filter((b) => b.checked).length;
    button.disabled = count < MIN_COMPARED || count > MAX_COMPARED;
    hint.textContent = `${count} selected: select ${MIN_COMPARED} to ${MAX_COMPARED} models.`;
  };
  boxes.forEach((b) => b.addEventListener("change", update));
  button.addEventListener("click", () =>
    withBusy(button, box, async () => {
      const query = boxes.filter((b) => b.checked).map((b) => `model=${encodeURIComponent(b.value)}`).join("&");
      output.replaceChildren(comparisonSection(await get(`/api/compare?${query}`)));
    }),
  );
  return h(
    "fieldset",
    { class: "compare-pick" },
    h("legend", {}, "Compare runs side by side"),
    h("ul", { class: "pick-list" }, models.map((m, i) => h("li", {}, h("label", {}, boxes[i], ` ${m.name} `, h("span", { class: "muted" }, `${m.model_id}`))))),
    button,
    " ",
    hint,
  );
}

const NESTED = ["config", "training_params", "metrics", "lineage", "file_sha256"];

export async function renderList(main) {
  const box = alertBox();
  main.append(box);
  try {
    const models = itemsOf(await get("/api/models"), "models");
    main.append(
      models.length
        ? table(models, [["model_id", "Model"], ["name", "Name"], ["base_model", "Base model"], ["task", "Task"], ["strategy", "Strategy"], ["size_mb", "MB"], ["created_at", "Created"]], { link: (m) => `#/models/${encodeURIComponent(m.model_id ?? m.id)}` })
        : h("p", {}, "No models yet: ", h("a", { href: "#/train" }, "train one"), "."),
    );
    if (models.length >= MIN_COMPARED) {
      const output = h("div", { class: "compare-output", "aria-live": "polite" });
      main.append(comparePicker(models, output, box), output);
    }
  } catch (error) {
    showError(box, error);
  }
}

function lineageSection(lineage) {
  const section = h("section", { "aria-labelledby": "lineage-h" }, h("h2", { id: "lineage-h" }, "Lineage"));
  const curve = Array.isArray(lineage.loss_curve) ? lineage.loss_curve : [];
  const flat = {};
  for (const [key, value] of Object.entries(lineage)) {
    if (key === "loss_curve") continue;
    if (value && typeof value === "object" && !Array.isArray(value)) {
      for (const [inner, innerValue] of Object.entries(value)) flat[`${key}.${inner}`] = innerValue;
    } else {
      flat[key] = value;
    }
  }
  section.append(fieldsTable(flat));
  if (curve.length) {
    const chart = new LineChart("Loss curve of the training run", "loss");
    for (const point of curve) chart.add(point.step, point.loss);
    section.append(h("figure", {}, h("figcaption", {}, "Loss curve"), chart.svg));
  }
  return section;
}

export async function renderModel(main, modelId) {
  const box = alertBox();
  main.append(box);
  let model;
  try {
    model = await get(`/api/models/${encodeURIComponent(modelId)}`);
  } catch (error) {
    showError(box, error);
    return;
  }
  const deleteButton = h("button", { type: "button", class: "danger" }, "Delete model");
  const confirmBox = h("div", { class: "confirm", hidden: true, role: "group", "aria-label": "Confirm deletion" });
  const confirmButton = h("button", { type: "button", class: "danger" }, `Yes, delete ${model.model_id}`);
  const cancelButton = h("button", { type: "button", class: "secondary" }, "Cancel");
  confirmBox.append(h("p", {}, `Delete ${model.model_id} and its files? This cannot be undone.`), confirmButton, cancelButton);
  deleteButton.addEventListener("click", () => {
    confirmBox.hidden = false;
    cancelButton.focus();
  });
  cancelButton.addEventListener("click", () => {
    confirmBox.hidden = true;
    deleteButton.focus();
  });
  confirmButton.addEventListener("click", () =>
    withBusy(confirmButton, box, async () => {
      const answer = await del(`/api/models/${encodeURIComponent(model.model_id)}`);
      confirmBox.hidden = true;
      deleteButton.disabled = true;
      showMessage(box, h("span", {}, (answer && answer.message) || `Deleted ${model.model_id}.`, " ", h("a", { href: "#/models" }, "Back to the models")), "success");
    }),
  );

  const trackingUrl = model.config && model.config.tracking_url;
  main.append(
    h("p", { class: "actions" }, h("a", { class: "button", href: `#/playground/${encodeURIComponent(model.model_id)}` }, "Try in the playground"), deleteButton),
    ...(trackingUrl ? [h("p", { class: "tracking" }, "Tracked in MLflow: ", h("a", { href: trackingUrl, rel: "noopener" }, trackingUrl))] : []),
    confirmBox,
    fieldsTable(model, "Model", NESTED),
  );
  for (const [key, caption] of [["metrics", "Metrics"], ["training_params", "Training settings"], ["config", "Full configuration"]]) {
    if (model[key] && typeof model[key] === "object" && Object.keys(model[key]).length) {
      main.append(h("section", { class: `model-${key}` }, fieldsTable(model[key], caption)));
    }
  }
  if (model.lineage && typeof model.lineage === "object") main.append(lineageSection(model.lineage));
}
