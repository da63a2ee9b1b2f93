// New training: a form whose memory estimate (POST /api/finetune/estimate_memory) is shown before
// the start, with the reason spelled out when the job would not fit: the largest parts, the largest
// batch that fits, and the nearest settings that fit, each with a button that applies it to the form.

import { get, itemsOf, post } from "../api.js";
import { formatNumber } from "../chart.js";
import { alertBox, clearMessage, field, h, select, showMessage, table, withBusy } from "../ui.js";

const TASKS = ["text-generation", "summarization", "extractive-question-answering"];
const BREAKDOWN = ["weights", "adapters", "optimizer", "gradients", "activations", "overhead", "total"];
// Inputs whose change makes the shown estimate stale.
const ESTIMATE_INPUTS = ["task", "model_name", "strategy", "provider", "per_device_train_batch_size", "gradient_accumulation_steps", "max_seq_length", "lora_r", "use_4bit"];
// Settings a proposal may change, as the start request names them.
const PROPOSAL_FIELDS = ["per_device_train_batch_size", "gradient_accumulation_steps", "max_seq_length", "use_4bit", "provider"];

function numberInput(name, attributes = {}) {
  return h("input", { type: "number", name, inputmode: "decimal", ...attributes });
}

async function optional(promise, fallback) {
  try {
    return await promise;
  } catch {
    return fallback; // the form still works with built-in choices
  }
}

export async function render(main, datasetParam) {
  const box = alertBox();
  const [info, session, defaults, datasetsBody] = await Promise.all([
    optional(get("/api/info"), {}),
    optional(get("/api/finetune/session"), {}),
    optional(get("/api/finetune/load_settings"), {}),
    optional(get("/api/datasets"), { datasets: [] }),
  ]);
  const datasets = itemsOf(datasetsBody, "datasets").map((d) => d.filename);
  const chosenDataset = datasetParam || datasets[0] || "";
  const controls = {
    task: select("task", TASKS, session.task || "text-generation"),
    model_name: h("input", { type: "text", name: "model_name", required: true, value: session.selected_model || "", autocomplete: "off", spellcheck: "false" }),
    dataset: datasets.length ? select("dataset", datasets, chosenDataset) : h("input", { type: "text", name: "dataset", required: true, value: chosenDataset }),
    strategy: select("strategy", info.strategies || ["sft", "qlora", "dpo", "rlhf"], "sft"),
    provider: select("provider", info.providers || ["huggingface"], "huggingface"),
    num_train_epochs: numberInput("num_train_epochs", { min: "0", step: "any", value: defaults.num_train_epochs ?? 1 }),
    per_device_train_batch_size: numberInput("per_device_train_batch_size", { min: "1", step: "1", value: defaults.per_device_train_batch_size ?? 2 }),
    gradient_accumulation_steps: numberInput("gradient_accumulation_steps", { min: "1", step: "1", value: defaults.gradient_accumulation_steps ?? 1 }),
    use_4bit: h("input", { type: "checkbox", name: "use_4bit" }),
    learning_rate: numberInput("learning_rate", { min: "0", step: "any", value: defaults.learning_rate ?? 2e-4 }),
    max_seq_length: numberInput("max_seq_length", { min: "8", step: "1", value: defaults.max_seq_length ?? 512 }),
    max_steps: numberInput("max_steps", { min: "1", step: "1", placeholder: "whole epochs" }),
    lora_r: numberInput("lora_r", { min: "1", step: "1", value: defaults.lora_r ?? 16 }),
    name: h("input", { type: "text", name: "name", maxlength: "200", placeholder: "optional" }),
  };
  const force = h("input", { type: "checkbox", name: "force" });
  const estimateButton = h("button", { type: "button", class: "secondary" }, "Estimate memory");
  const startButton = h("button", { type: "submit" }, "Start training");
  const estimateView = h("section", { class: "estimate", "aria-live": "polite", "aria-labelledby": "est-h" }, h("h2", { id: "est-h" }, "Memory estimate"), h("p", { class: "muted" }, "Fill in a model to see whether it fits."));
  const form = h(
    "form",
    { class: "train-form", novalidate: true },
    h(
      "fieldset",
      {},
      h("legend", {}, "What to train"),
      field("Task", controls.task),
      field("Base model", controls.model_name, "A Hub id or a model folder on the server."),
      field("Dataset", controls.dataset, datasets.length ? null : "No uploads yet: upload one under Datasets."),
      field("Strategy", controls.strategy),
      field("Provider", controls.provider),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Settings"),
      field("Epochs", controls.num_train_epochs),
      field("Batch size per device", controls.per_device_train_batch_size),
      field("Gradient accumulation steps", controls.gradient_accumulation_steps, "Batch size x accumulation is the effective batch."),
      field("4-bit weights (QLoRA)", controls.use_4bit),
      field("Learning rate", controls.learning_rate),
      field("Max sequence length", controls.max_seq_length),
      field("Max steps", controls.max_steps),
      field("LoRA rank", controls.lora_r),
      field("Model name", controls.name),
    ),
    h("div", { class: "actions" }, estimateButton, h("label", { class: "check" }, force, " Start even if the estimate says it will not fit"), startButton),
  );
  main.append(box, h("div", { class: "two-columns" }, form, estimateView));

  let estimate = null; // {key, answer}: the estimate shown, for the inputs it was made for

  const value = (name) => (controls[name].type === "checkbox" ? (controls[name].checked ? "true" : "") : controls[name].value.trim());
  const estimateKey = () => JSON.stringify(ESTIMATE_INPUTS.map(value));

  function body() {
    const fields = { task: value("task"), model_name: value("model_name"), dataset: value("dataset"), strategy: value("strategy"), provider: value("provider") };
    for (const name of ["num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "max_seq_length", "max_steps", "lora_r"]) {
      if (value(name) !== "") fields[name] = Number(value(name));
    }
    // Unticked leaves 4-bit to the strategy (qlora implies it).
    if (controls.use_4bit.checked) fields.use_4bit = true;
    if (value("name")) fields.name = value("name");
    if (force.checked) fields.force = true;
    return fields;
  }

  // A proposal's settings into the form; the estimate then runs again for them.
  function applyProposal(settings) {
    for (const name of PROPOSAL_FIELDS) {
      if (!(name in settings)) continue;
      const control = controls[name];
      if (control.type === "checkbox") control.checked = Boolean(settings[name]);
      else {
        if (control.tagName === "SELECT" && ![...control.options].some((o) => o.value === String(settings[name]))) {
          control.append(h("option", { value: String(settings[name]) }, String(settings[name])));
        }
        control.value = String(settings[name]);
      }
    }
    return withBusy(estimateButton, box, runEstimate);
  }

  function proposalsView(answer) {
    const proposals = answer.proposals || [];
    if (!proposals.length) return answer.fits ? null : h("p", { class: "muted" }, "No settings of this model fit this device.");
    return h(
      "div",
      { class: "proposals" },
      h("h3", {}, "Settings that fit"),
      h(
        "ol",
        {},
        ...proposals.map((proposal) =>
          h(
            "li",
            { class: "proposal" },
            `${proposal.description}: about ${formatNumber(proposal.total_gb)} GiB. `,
            h("button", { type: "button", class: "secondary apply-proposal", onclick: () => applyProposal(proposal.settings) }, "Apply"),
          ),
        ),
      ),
    );
  }

  function showEstimate(answer) {
    const breakdown = answer.breakdown || {};
    // From bytes where given: the rounded *_gb fields read 0 for small models.
    const gib = (part) => (typeof breakdown[`${part}_bytes`] === "number" ? breakdown[`${part}_bytes`] / 2 ** 30 : breakdown[`${part}_gb`]);
    // The named parts (CUDA context, allocator slack, logits...) where the gateway gives them.
    const rows = Array.isArray(breakdown.parts) && breakdown.parts.length
      ? [...breakdown.parts.map((p) => ({ part: p.name, gib: formatNumber(p.bytes / 2 ** 30) })), { part: "total", gib: formatNumber(gib("total")) }]
      : BREAKDOWN.map((part) => ({ part, gib: formatNumber(gib(part)) }));
    const largest = (answer.largest_parts || []).map((p) => `${p.name} ${formatNumber(p.bytes / 2 ** 30)} GiB`).join(", ");
    const verdict = answer.fits
      ? h("p", { class: "message success verdict" }, `Fits: ${formatNumber(answer.total_gb)} GiB needed, ${formatNumber(answer.available_gb)} GiB available on ${answer.device}.`)
      : h(
          "div",
          { class: "message warning verdict", role: "alert" },
          h("strong", {}, "Will not fit. "),
          `Training needs about ${formatNumber(answer.total_gb)} GiB but ${answer.device} has ${formatNumber(answer.available_gb)} GiB available, so the start will be refused. `,
          largest ? `Largest parts: ${largest}. ` : "",
          "Apply one of the settings below, choose a smaller model, or tick the box to start anyway.",
        );
    const batch = typeof answer.max_batch_size === "number" ? h("p", { class: "muted max-batch" }, `Largest batch size per device that fits: ${answer.max_batch_size}.`) : null;
    estimateView.replaceChildren(h("h2", { id: "est-h" }, "Memory estimate"), verdict, batch, proposalsView(answer), table(rows, [["part", "Part"], ["gib", "GiB"]]));
  }

  async function runEstimate() {
    const key = estimateKey();
    const answer = await post("/api/finetune/estimate_memory", {
      json: {
        model_name: value("model_name"),
        strategy: value("strategy"),
        task: value("task"),
        provider: value("provider") || undefined,
        use_4bit: controls.use_4bit.checked || undefined,
        gradient_accumulation_steps: Number(value("gradient_accumulation_steps")) || undefined,
        per_device_train_batch_size: Number(value("per_device_train_batch_size")) || undefined,
        max_seq_length: Number(value("max_seq_length")) || undefined,
        lora_r: Number(value("lora_r")) || undefined,
      },
    });
    estimate = { key, answer };
    showEstimate(answer);
    return answer;
  }

  let debounce = null;
  for (const name of ESTIMATE_INPUTS) {
    controls[name].addEventListener("change", () => {
      clearTimeout(debounce);
      if (!value("model_name")) return;
      debounce = setTimeout(() => withBusy(estimateButton, box, runEstimate), 300);
    });
  }
  estimateButton.addEventListener("click", () => {
    if (!value("model_name")) return showMessage(box, "Enter a base model first.", "warning");
    withBusy(estimateButton, box, runEstimate);
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    withBusy(startButton, box, async () => {
      const missing = ["model_name", "dataset"].filter((name) => !value(name));
      if (missing.length) throw new Error(`Fill in: ${missing.join(", ")}`);
      // The estimate is always on screen before a start.
      const answer = estimate && estimate.key === estimateKey() ? estimate.answer : await runEstimate();
      if (!answer.fits && !force.checked) {
        showMessage(box, "Not started: the estimate says this job does not fit (see the estimate). Change the settings or tick the box to start anyway.", "warning");
        return;
      }
      const started = await post("/api/start_training", { json: body() });
      clearMessage(box);
      window.location.hash = `#/jobs/${encodeURIComponent(started.job_id)}`;
    });
  });

  if (value("model_name")) withBusy(estimateButton, box, runEstimate).catch(() => {});
}
