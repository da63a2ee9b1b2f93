// Models: the registry's list, one model's details (metrics, settings, lineage when the gateway
// sends it) and deletion.

import { del, get, itemsOf } from "../api.js";
import { LineChart } from "../chart.js";
import { alertBox, fieldsTable, h, showError, showMessage, table, withBusy } from "../ui.js";

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

  main.append(
    h("p", { class: "actions" }, h("a", { class: "button", href: `#/playground/${encodeURIComponent(model.model_id)}` }, "Try in the playground"), deleteButton),
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
