// Datasets: upload a JSONL, JSON, CSV or Parquet file, optionally with a column mapping (preview
// first, every problem the server finds listed), list them with their columns, mapping and source,
// and inspect one with a base model's tokenizer (a histogram of row lengths in tokens, stats per
// field, rows over the max length, duplicates, empty fields, rows as the model sees them).

import { get, itemsOf, post } from "../api.js";
import { formatNumber } from "../chart.js";
import { alertBox, cell, field, h, showError, showMessage, table, withBusy } from "../ui.js";

const PREVIEW_ROWS = 5;
const PREVIEW_CHARS = 80;
const SVG_NS = "http://www.w3.org/2000/svg";
const HIST_BINS = 20;

// "prompt=question, completion=answer" -> {prompt: "question", completion: "answer"}; null when
// an entry is not FIELD=COLUMN.
export function parseMapping(text) {
  const mapping = {};
  for (const entry of text.split(",").map((part) => part.trim()).filter(Boolean)) {
    const [target, ...rest] = entry.split("=");
    const column = rest.join("=").trim();
    if (!target.trim() || !column) return null;
    mapping[target.trim()] = column;
  }
  return mapping;
}

function mappingText(mapping) {
  const entries = Object.entries(mapping || {});
  return entries.length ? entries.map(([target, column]) => `${target} ← ${column}`).join(", ") : "";
}

// The first rows of a local file, read in the browser before anything is sent: JSONL rows, a CSV
// header, or (JSON, Parquet) nothing until the server has read it.
async function localPreview(file) {
  const lower = file.name.toLowerCase();
  if (lower.endsWith(".csv")) {
    const header = (await file.slice(0, 64 * 1024).text()).split("\n", 1)[0].replace(/^\uFEFF/, "");
    return { rows: [], problems: [], note: `CSV columns: ${header.split(",").map((c) => c.trim()).join(", ")}` };
  }
  if (!lower.endsWith(".jsonl")) return { rows: [], problems: [], note: `${file.name}: read by the server on upload.` };
  const text = await file.slice(0, 256 * 1024).text();
  const rows = [];
  const problems = [];
  text.split("\n").forEach((line, index) => {
    if (rows.length >= PREVIEW_ROWS || !line.trim()) return;
    try {
      const row = JSON.parse(line);
      if (row && typeof row === "object" && !Array.isArray(row)) rows.push(row);
      else problems.push(`line ${index + 1}: not a JSON object`);
    } catch {
      problems.push(`line ${index + 1}: not valid JSON`);
    }
  });
  return { rows, problems, note: null };
}

function shorten(value) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length <= PREVIEW_CHARS ? text : `${text.slice(0, PREVIEW_CHARS - 1)}…`;
}

function previewTable(rows, caption) {
  const keys = [...new Set(rows.flatMap((row) => Object.keys(row)))];
  const shortened = rows.map((row) => Object.fromEntries(keys.map((key) => [key, key in row ? shorten(row[key]) : ""])));
  return table(shortened, keys.map((key) => [key, key]), { caption });
}

function problemList(problems) {
  return h("ul", { class: "problems" }, problems.map((problem) => h("li", {}, problem)));
}

export async function render(main) {
  const box = alertBox();
  const fileInput = h("input", { type: "file", name: "file", accept: ".jsonl,.json,.csv,.parquet,application/jsonl,application/json,text/csv", required: true });
  const mappingInput = h("input", { type: "text", name: "column_mapping", placeholder: "prompt=question, completion=answer", autocomplete: "off" });
  const uploadButton = h("button", { type: "submit" }, "Upload");
  const preview = h("div", { class: "preview", "aria-live": "polite" });
  const result = h("div", { class: "upload-result", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "upload" },
    field("JSONL dataset (or .json, .csv, .parquet)", fileInput, "One JSON object per line, e.g. {\"prompt\": …, \"completion\": …}, a JSON array of such objects, a CSV with a header row, or Parquet; at least 10 rows."),
    field("Column mapping (optional)", mappingInput, "FIELD=COLUMN pairs for columns of other names, e.g. prompt=question, completion=answer."),
    uploadButton,
  );
  const insight = insightSection();
  const listing = h("section", { "aria-labelledby": "list-h" }, h("h2", { id: "list-h" }, "Uploaded datasets"));
  main.append(h("section", { "aria-labelledby": "up-h" }, h("h2", { id: "up-h" }, "Upload"), form, box, preview, result), listing, insight.section);

  async function refresh() {
    const datasets = itemsOf(await get("/api/datasets"), "datasets");
    const body = datasets.length
      ? table(
          datasets.map((d) => ({ ...d, train: d.filename, mapping: mappingText(d.column_mapping), from: sourceText(d.source), columnList: (d.columns || []).join(", ") })),
          [["filename", "File"], ["num_examples", "Examples"], ["size_mb", "MB"], ["uploaded_at", "Uploaded"], ["from", "Source"], ["columnList", "Columns"], ["mapping", "Mapping"]],
          { link: (row) => `#/train/${encodeURIComponent(row.filename)}` },
        )
      : h("p", {}, "No datasets yet.");
    listing.replaceChildren(h("h2", { id: "list-h" }, "Uploaded datasets"), body);
    insight.setDatasets(datasets.map((d) => d.filename));
  }

  fileInput.addEventListener("change", async () => {
    result.replaceChildren();
    const file = fileInput.files[0];
    if (!file) return preview.replaceChildren();
    const { rows, problems, note } = await localPreview(file);
    preview.replaceChildren(
      note ? h("p", {}, note) : rows.length ? previewTable(rows, `Preview of ${file.name} (first ${rows.length} rows, read locally)`) : h("p", {}, `${file.name}: no rows to preview.`),
      ...(problems.length ? [h("div", { class: "message warning" }, "Problems seen locally:", problemList(problems))] : []),
    );
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = fileInput.files[0];
    if (!file) return showMessage(box, "Choose a file first.", "warning");
    const mapping = parseMapping(mappingInput.value);
    if (mapping === null) return showMessage(box, "Column mapping: write FIELD=COLUMN pairs separated by commas.", "warning");
    withBusy(uploadButton, box, async () => {
      const body = new FormData();
      body.append("file", file, file.name);
      if (Object.keys(mapping).length) body.append("column_mapping", JSON.stringify(mapping));
      try {
        const answer = await post("/api/upload_dataset", { form: body });
        const errors = (answer.validation && answer.validation.errors) || [];
        if (answer.validation && answer.validation.valid === false) {
          result.replaceChildren(h("div", { class: "message warning", role: "alert" }, `${answer.filename} was stored but is not valid (${errors.length} problems):`, problemList(errors)));
        } else {
          showMessage(result, h("span", {}, "Uploaded ", h("strong", { class: "uploaded-name" }, answer.filename), `: ${cell(answer.num_examples)} examples. `, h("a", { href: `#/train/${encodeURIComponent(answer.filename)}` }, "Train on it")), "success");
        }
      } catch (error) {
        if (error.problems && error.problems.length) {
          result.replaceChildren(h("div", { class: "message error", role: "alert" }, h("strong", {}, `${file.name} was refused (${error.problems.length} problem${error.problems.length === 1 ? "" : "s"}):`), problemList(error.problems)));
          return;
        }
        throw error;
      }
      await refresh();
    });
  });

  try {
    await refresh();
  } catch (error) {
    showError(box, error);
  }
}

function sourceText(source) {
  if (!source || !source.format) return "";
  if (source.format === "hub") return `Hub ${source.hub_id} ${source.hub_split} @ ${(source.hub_sha || "").slice(0, 10)}`;
  return source.original_filename ? `${source.format} (${source.original_filename})` : source.format;
}

function svgNode(name, attributes = {}, text = "") {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text) element.textContent = text;
  return element;
}

// Rows by their length in tokens, in HIST_BINS equal bins, with the max length marked.
export function histogram(lengths, maxLength) {
  const [width, height, pad] = [600, 220, { left: 48, right: 12, top: 14, bottom: 30 }];
  const title = `Rows by length in tokens (max length ${maxLength})`;
  const svg = svgNode("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title, class: "chart histogram" });
  svg.append(svgNode("title", {}, title));
  const top = Math.max(...lengths, maxLength);
  const binWidth = Math.max(1, Math.ceil((top + 1) / HIST_BINS));
  const counts = new Array(Math.ceil((top + 1) / binWidth)).fill(0);
  for (const length of lengths) counts[Math.floor(length / binWidth)] += 1;
  svg.setAttribute("data-rows", lengths.length);
  svg.setAttribute("data-bins", counts.length);
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const most = Math.max(1, ...counts);
  const barW = plotW / counts.length;
  svg.append(svgNode("rect", { x: pad.left, y: pad.top, width: plotW, height: plotH, class: "plot-area" }));
  counts.forEach((count, index) => {
    if (!count) return;
    const barH = (count / most) * plotH;
    const bar = svgNode("rect", { x: (pad.left + index * barW + 1).toFixed(1), y: (pad.top + plotH - barH).toFixed(1), width: Math.max(1, barW - 2).toFixed(1), height: barH.toFixed(1), class: "bar" });
    bar.append(svgNode("title", {}, `${count} rows of ${index * binWidth}–${(index + 1) * binWidth - 1} tokens`));
    svg.append(bar);
  });
  const limitX = pad.left + (maxLength / (counts.length * binWidth)) * plotW;
  svg.append(svgNode("line", { x1: limitX.toFixed(1), x2: limitX.toFixed(1), y1: pad.top, y2: pad.top + plotH, class: "limit" }));
  svg.append(svgNode("text", { x: pad.left - 6, y: pad.top + 10, "text-anchor": "end", class: "tick" }, String(most)));
  svg.append(svgNode("text", { x: pad.left, y: height - 10, "text-anchor": "start", class: "tick" }, "0 tokens"));
  svg.append(svgNode("text", { x: width - pad.right, y: height - 10, "text-anchor": "end", class: "tick" }, `${counts.length * binWidth} tokens`));
  return svg;
}

function insightSection() {
  const box = alertBox();
  const datasetSelect = h("select", { name: "dataset" });
  const modelInput = h("input", { type: "text", name: "model", placeholder: "org/name or a local model folder", required: true });
  const lengthInput = h("input", { type: "number", name: "max_length", min: 1, value: 2048, required: true });
  const button = h("button", { type: "submit" }, "Inspect");
  const output = h("div", { class: "insight", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "inline-form" },
    field("Dataset to inspect", datasetSelect),
    field("Base model (tokenizer)", modelInput),
    field("Max length (tokens)", lengthInput),
    button,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    withBusy(button, box, async () => {
      const answer = await get(`/api/datasets/${encodeURIComponent(datasetSelect.value)}/insight`, {
        query: { model: modelInput.value.trim(), max_length: lengthInput.value, sample_size: 2 },
      });
      const stats = (answer.fields || []).map((f) => ({ ...f, mean: formatNumber(f.mean) }));
      const empty = Object.entries(answer.empty_fields || {});
      output.replaceChildren(
        h("p", { class: "insight-summary" },
          `${answer.rows_over_max_length} of ${answer.rows} rows are over ${answer.max_length} tokens (truncated in training); `,
          `${answer.duplicate_rows} duplicate rows`,
          empty.length ? `; empty: ${empty.map(([name, count]) => `${name} in ${count} rows`).join(", ")}` : "; no empty fields"),
        h("div", { class: "charts" }, h("figure", {}, h("figcaption", {}, "Rows by length in tokens (dashed: max length)"), histogram(answer.total_lengths || [], answer.max_length))),
        table(stats, [["field", "Field"], ["min", "Min"], ["p50", "p50"], ["p95", "p95"], ["max", "Max"], ["mean", "Mean"]], { caption: "Tokens per field (total: the row as the model sees it)" }),
        h("h3", {}, answer.chat_template ? "Rows as the model sees them (chat template applied)" : "Rows as the model sees them (no chat template: plain format)"),
        ...(answer.samples || []).map((sample) => h("pre", { class: "sample" }, sample)),
      );
    });
  });
  const section = h("section", { "aria-labelledby": "insight-h" }, h("h2", { id: "insight-h" }, "Inspect a dataset"), form, box, output);
  return {
    section,
    setDatasets(names) {
      const current = datasetSelect.value;
      datasetSelect.replaceChildren(...names.map((name) => h("option", { value: name, selected: name === current }, name)));
    },
  };
}
