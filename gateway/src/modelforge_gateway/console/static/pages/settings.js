// Settings kept in this browser: the API key sent as `Authorization: Bearer <key>`.

import { apiKey, get, setApiKey } from "../api.js";
import { alertBox, field, h, showMessage, withBusy } from "../ui.js";

export async function render(main) {
  const box = alertBox();
  const keyInput = h("input", { type: "password", name: "api_key", autocomplete: "off", value: apiKey() });
  const save = h("button", { type: "submit" }, "Save");
  const form = h(
    "form",
    {},
    field("API key", keyInput, "Only needed when the gateway requires one (MODELFORGE_API_KEYS). Stored in this browser."),
    save,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(keyInput.value.trim());
    withBusy(save, box, async () => {
      const info = await get("/api/info");
      showMessage(box, `Saved. The gateway answers: version ${info.version}, tasks ${info.tasks.join(", ")}.`, "success");
    });
  });
  main.append(box, form);
}
