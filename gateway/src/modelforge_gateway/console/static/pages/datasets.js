// Datasets: upload a JSONL file (preview first, every problem the server finds listed), list them.

import { get, itemsOf, post } from "../api.js";
import { alertBox, cell, field, h, showError, showMessage, table, withBusy } from "../ui.js";

const PREVIEW_ROWS = 5;
const PREVIEW_CHARS = 80;

// The first rows of a local JSONL file, read in the browser before anything is sent.
async function localPreview(file) {
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
  return { rows, problems };
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
  const fileInput = h("input", { type: "file", name: "file", accept: ".jsonl,.json,application/jsonl,application/json", required: true });
  const uploadButton = h("button", { type: "submit" }, "Upload");
  const preview = h("div", { class: "preview", "aria-live": "polite" });
  const result = h("div", { class: "upload-result", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "upload" },
    field("JSONL dataset", fileInput, "One JSON object per line, e.g. {\"prompt\": …, \"completion\": …}; at least 10 rows."),
    uploadButton,
  );
  const listing = h("section", { "aria-labelledby": "list-h" }, h("h2", { id: "list-h" }, "Uploaded datasets"));
  main.append(h("section", { "aria-labelledby": "up-h" }, h("h2", { id: "up-h" }, "Upload"), form, box, preview, result), listing);

  async function refresh() {
    const datasets = itemsOf(await get("/api/datasets"), "datasets");
    const body = datasets.length
      ? table(
          datasets.map((d) => ({ ...d, train: d.filename })),
          [["filename", "File"], ["num_examples", "Examples"], ["size_mb", "MB"], ["uploaded_at", "Uploaded"]],
          { link: (row) => `#/train/${encodeURIComponent(row.filename)}` },
        )
      : h("p", {}, "No datasets yet.");
    listing.replaceChildren(h("h2", { id: "list-h" }, "Uploaded datasets"), body);
  }

  fileInput.addEventListener("change", async () => {
    result.replaceChildren();
    const file = fileInput.files[0];
    if (!file) return preview.replaceChildren();
    const { rows, problems } = await localPreview(file);
    preview.replaceChildren(
      rows.length ? previewTable(rows, `Preview of ${file.name} (first ${rows.length} rows, read locally)`) : h("p", {}, `${file.name}: no rows to preview.`),
      problems.length ? h("div", { class: "message warning" }, "Problems seen locally:", problemList(problems)) : null,
    );
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = fileInput.files[0];
    if (!file) return showMessage(box, "Choose a file first.", "warning");
    withBusy(uploadButton, box, async () => {
      const body = new FormData();
      body.append("file", file, file.name);
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
