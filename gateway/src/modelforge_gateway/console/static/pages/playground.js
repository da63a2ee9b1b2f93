// Playground: pick a model, set the generation parameters, watch the answer stream in
// (POST /api/playground/stream; one-shot /api/playground/generate on a gateway without it).
// The page keeps a conversation: each turn sends the system prompt and every earlier message
// and answer as `messages`, and the model's chat template makes its prompt of them. The first
// turn without a system prompt is sent as a plain `prompt` (the same text to a chat model, and
// what summarization models expect).

import { get, itemsOf, post, postStream } from "../api.js";
import { alertBox, field, h, select, showError, showMessage, withBusy } from "../ui.js";

export async function render(main, modelParam) {
  const box = alertBox();
  main.append(box);
  let models = [];
  try {
    models = itemsOf(await get("/api/models"), "models");
  } catch (error) {
    showError(box, error);
    return undefined;
  }
  if (!models.length) {
    main.append(h("p", {}, "No models yet: ", h("a", { href: "#/train" }, "train one"), " first."));
    return undefined;
  }
  const modelSelect = select("model_id", models.map((m) => [m.model_id, `${m.name || m.model_id} (${m.model_id})`]), modelParam || models[0].model_id);
  const systemPrompt = h("textarea", { name: "system", rows: "2", placeholder: "Optional: how the model should answer" });
  const prompt = h("textarea", { name: "prompt", rows: "4", required: true }, "Where does the red fox live?");
  const maxNewTokens = h("input", { type: "number", name: "max_new_tokens", min: "1", max: "4096", value: "32" });
  const temperature = h("input", { type: "number", name: "temperature", min: "0", max: "5", step: "0.05", value: "0.7" });
  const topP = h("input", { type: "number", name: "top_p", min: "0", max: "1", step: "0.05", value: "0.9" });
  const generateButton = h("button", { type: "submit" }, "Generate");
  const stopButton = h("button", { type: "button", class: "secondary", disabled: true }, "Stop");
  const newConversationButton = h("button", { type: "button", class: "secondary", disabled: true }, "New conversation");
  const conversation = h("ol", { class: "conversation", "aria-label": "Conversation" });
  let history = [];
  const output = h("output", { class: "generated", "aria-live": "polite", for: prompt.id });
  const stats = h("p", { class: "muted stats", role: "status" });
  const form = h(
    "form",
    { class: "playground" },
    field("Model", modelSelect),
    field("System prompt", systemPrompt),
    field("Prompt", prompt),
    h("div", { class: "row" }, field("Max new tokens", maxNewTokens), field("Temperature", temperature, "0 is greedy"), field("Top-p", topP)),
    h("div", { class: "actions" }, generateButton, stopButton, newConversationButton),
  );
  main.append(form, h("section", { "aria-labelledby": "out-h" }, h("h2", { id: "out-h" }, "Output"), conversation, output, stats));

  const showConversation = () => {
    // The latest answer stays in the output below; earlier turns and the latest question are listed.
    const shown = history.length && history[history.length - 1].role === "assistant" ? history.slice(0, -1) : history;
    conversation.replaceChildren(...shown.map((turn) => h("li", { class: `turn ${turn.role}` }, h("strong", {}, turn.role === "user" ? "You" : "Model"), " ", turn.content)));
    newConversationButton.disabled = history.length === 0;
  };
  const startOver = () => {
    history = [];
    showConversation();
    output.textContent = "";
    stats.textContent = "";
  };
  newConversationButton.addEventListener("click", startOver);
  modelSelect.addEventListener("change", startOver);

  let controller = null;
  stopButton.addEventListener("click", () => controller && controller.abort());
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!prompt.value.trim()) return showMessage(box, "Write a prompt first.", "warning");
    const userTurn = { role: "user", content: prompt.value };
    const system = systemPrompt.value.trim() ? [{ role: "system", content: systemPrompt.value }] : [];
    const body = {
      model_id: modelSelect.value,
      max_new_tokens: Number(maxNewTokens.value),
      temperature: Number(temperature.value),
      top_p: Number(topP.value),
    };
    if (history.length || system.length) body.messages = [...system, ...history, userTurn];
    else body.prompt = prompt.value;
    output.textContent = "";
    stats.textContent = "";
    output.dataset.state = "streaming";
    controller = new AbortController();
    stopButton.disabled = false;
    withBusy(generateButton, box, async () => {
      let final = {};
      try {
        await postStream("/api/playground/stream", body, (piece) => {
          output.textContent += piece.text || "";
          if (piece.finished) final = piece;
        }, controller.signal);
      } catch (error) {
        if (error.name === "AbortError") {
          final = { stopped: true };
        } else if (error.routeMissing) {
          final = await post("/api/playground/generate", { json: body });
          output.textContent = final.generated_text || "";
        } else {
          throw error;
        }
      } finally {
        stopButton.disabled = true;
        output.dataset.state = "done";
      }
      stats.textContent = final.stopped ? "stopped" : `${final.tokens_generated ?? "?"} tokens in ${final.generation_time_ms ?? "?"} ms`;
      if (!final.stopped) {
        // The answer joins the conversation; the next prompt continues it.
        history = [...history, userTurn, { role: "assistant", content: output.textContent }];
        showConversation();
      }
    });
  });
  return () => controller && controller.abort();
}
