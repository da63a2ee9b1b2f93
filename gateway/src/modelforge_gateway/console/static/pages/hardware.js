// Hardware and recommendations: the v1 wizard's detect / recommended models / load_settings.

import { get, post } from "../api.js";
import { alertBox, field, fieldsTable, h, select, showError, showMessage, withBusy } from "../ui.js";

const TASKS = ["text-generation", "summarization", "extractive-question-answering"];

export async function render(main) {
  const errors = alertBox();
  const specs = h("section", { "aria-labelledby": "specs-h" }, h("h2", { id: "specs-h" }, "This machine"));
  const taskSelect = select("task", TASKS, "text-generation");
  const detectButton = h("button", { type: "submit" }, "Detect and recommend");
  const form = h("form", { class: "inline-form" }, field("Task", taskSelect), detectButton);
  const advice = h("div", { "aria-live": "polite" });
  const defaults = h("section", { "aria-labelledby": "defaults-h" });
  main.append(
    errors,
    specs,
    h("section", { "aria-labelledby": "rec-h" }, h("h2", { id: "rec-h" }, "Recommended models"), form, advice),
    defaults,
  );

  try {
    const hardware = await get("/api/finetune/hardware_specs");
    specs.append(fieldsTable(hardware, null, ["gpus"]));
    if (Array.isArray(hardware.gpus) && hardware.gpus.length) {
      specs.append(fieldsTable(Object.fromEntries(hardware.gpus.map((gpu) => [`GPU ${gpu.index}`, `${gpu.name}: ${gpu.free_memory_gb} of ${gpu.total_memory_gb} GB free`]))));
    }
  } catch (error) {
    showError(errors, error);
  }

  async function detect() {
    const task = taskSelect.value;
    const found = await post("/api/finetune/detect", { json: { task } });
    const options = Array.isArray(found.possible_options) ? found.possible_options : [];
    const chosen = h("p", { class: "message info", role: "status", hidden: true });
    advice.replaceChildren(
      h("p", {}, "Profile ", h("strong", { class: "profile" }, found.profile), ` · recommended for ${task}: `, h("strong", {}, found.model_recommendation)),
      h(
        "ul",
        { class: "choices" },
        options.map((model) =>
          h(
            "li",
            {},
            h("code", {}, model),
            " ",
            h("button", {
              type: "button",
              class: "secondary",
              onclick: async (event) => {
                await withBusy(event.currentTarget, errors, async () => {
                  await post("/api/finetune/set_model", { json: { selected_model: model } });
                  showMessage(chosen, `Selected ${model}: the training form starts from it.`);
                  window.location.hash = "#/train";
                });
              },
            }, `Train ${model.split("/").pop()}`),
          ),
        ),
      ),
      chosen,
    );
    const settings = await get("/api/finetune/load_settings");
    defaults.replaceChildren(h("h2", { id: "defaults-h" }, `Recommended settings for ${task}`), fieldsTable(settings));
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    withBusy(detectButton, errors, detect);
  });
  await withBusy(detectButton, errors, detect);
}
