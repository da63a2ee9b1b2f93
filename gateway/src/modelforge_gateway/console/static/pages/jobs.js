// Jobs: the list (GET /api/jobs, or the current job on a gateway without it) and a live job page
// fed by WS /ws/training with a loss and learning-rate chart, logs and a stop button.

import { get, itemsOf, post } from "../api.js";
import { LineChart, formatNumber } from "../chart.js";
import { JobFollower, isTerminal } from "../follow.js";
import { alertBox, cell, fieldsTable, h, showError, showMessage, table, withBusy } from "../ui.js";

const REFRESH_MS = 3000;
const MAX_LOG_LINES = 500;

function flatten(job) {
  const config = job.config && typeof job.config === "object" ? job.config : {};
  const steps = job.total_steps ? `${cell(job.current_step)}/${job.total_steps}` : "–";
  return { ...job, model_name: job.model_name || config.model_name, steps };
}

// GET /api/jobs where the gateway has it, else the one job /api/training_status knows.
async function listJobs() {
  try {
    return { jobs: itemsOf(await get("/api/jobs"), "jobs"), fallback: false };
  } catch (error) {
    if (!error.routeMissing) throw error;
    const current = await get("/api/training_status");
    return { jobs: current && current.job_id ? [current] : [], fallback: true };
  }
}

async function getJob(jobId) {
  try {
    return await get(`/api/jobs/${encodeURIComponent(jobId)}`);
  } catch (error) {
    if (!error.routeMissing) throw error;
    return get("/api/training_status", { query: { job_id: jobId } });
  }
}

async function stopJob(jobId) {
  try {
    return await post(`/api/jobs/${encodeURIComponent(jobId)}/cancel`);
  } catch (error) {
    if (!error.routeMissing) throw error;
    return post("/api/stop_training", { query: { job_id: jobId } });
  }
}

export async function renderList(main) {
  const box = alertBox();
  const listing = h("div", { "aria-live": "polite" });
  main.append(box, h("p", {}, h("a", { href: "#/train", class: "button" }, "New training")), listing);

  async function refresh() {
    const { jobs, fallback } = await listJobs();
    listing.replaceChildren(
      fallback ? h("p", { class: "muted" }, "This gateway has no GET /api/jobs: showing the current job only.") : "",
      jobs.length
        ? table(jobs.map(flatten), [["job_id", "Job"], ["status", "Status"], ["progress", "Progress %"], ["steps", "Step"], ["model_name", "Model"], ["created_at", "Created"]], { link: (job) => `#/jobs/${encodeURIComponent(job.job_id)}` })
        : h("p", {}, "No jobs yet."),
    );
    return jobs.some((job) => !isTerminal(job) && job.status !== "idle");
  }

  let timer = null;
  const loop = async () => {
    try {
      if (await refresh()) timer = setTimeout(loop, REFRESH_MS);
    } catch (error) {
      showError(box, error);
    }
  };
  await loop();
  return () => clearTimeout(timer);
}

export async function renderJob(main, jobId) {
  const box = alertBox();
  const statusBadge = h("span", { class: "status", "data-status": "unknown" }, "…");
  const progressBar = h("progress", { max: "100", value: "0", "aria-label": "Training progress" });
  const numbers = h("dl", { class: "numbers" });
  const connection = h("p", { class: "muted connection", role: "status" }, "connecting…");
  const stopButton = h("button", { type: "button", class: "danger" }, "Stop job");
  const outcome = h("div", { "aria-live": "polite" });
  const lossChart = new LineChart("Training loss by step", "loss");
  const lrChart = new LineChart("Learning rate by step", "lr");
  const logs = h("ol", { class: "logs", "aria-label": "Job log" });
  const details = h("details", {}, h("summary", {}, "Configuration"));

  main.append(
    box,
    h("div", { class: "job-head" }, h("p", {}, "Status ", statusBadge), progressBar, stopButton),
    numbers,
    connection,
    outcome,
    h("div", { class: "charts" }, h("figure", {}, h("figcaption", {}, "Loss"), lossChart.svg), h("figure", {}, h("figcaption", {}, "Learning rate"), lrChart.svg)),
    h("section", { "aria-labelledby": "log-h" }, h("h2", { id: "log-h" }, "Log"), logs),
    details,
  );

  let started = null;
  function showState(event) {
    if (event.status) {
      statusBadge.textContent = event.status;
      statusBadge.dataset.status = event.status;
    }
    if (typeof event.progress === "number") progressBar.value = event.progress;
    const elapsed = started ? Math.round((Date.now() - started) / 1000) : null;
    const entries = {
      Step: event.total_steps ? `${event.current_step}/${event.total_steps}` : cell(event.current_step),
      Epoch: event.total_epochs ? `${cell(event.current_epoch)}/${event.total_epochs}` : cell(event.epoch),
      Loss: formatNumber(event.loss),
      "Learning rate": formatNumber(event.learning_rate),
      Progress: `${formatNumber(event.progress ?? 0)} %`,
      "Watching for": elapsed === null ? "–" : `${elapsed} s`,
    };
    numbers.replaceChildren(...Object.entries(entries).map(([name, text]) => h("div", {}, h("dt", {}, name), h("dd", {}, text))));
    stopButton.disabled = isTerminal(event);
  }

  function log(text, kind = "") {
    logs.append(h("li", { class: kind }, text));
    while (logs.children.length > MAX_LOG_LINES) logs.firstChild.remove();
    logs.scrollTop = logs.scrollHeight;
  }

  try {
    const job = await getJob(jobId);
    showState(job);
    if (job.config && typeof job.config === "object") details.append(fieldsTable(job.config));
    else details.append(fieldsTable(job));
  } catch (error) {
    showError(box, error);
    if (error.status === 404) return undefined;
  }
  started = Date.now();

  let lastStatus = null;
  const follower = new JobFollower(jobId, {
    onEvent(event, { snapshot }) {
      if (event.type === "progress" || (event.type !== "status" && typeof event.loss === "number")) {
        const step = event.current_step;
        if (typeof event.loss === "number") lossChart.add(step, event.loss);
        if (typeof event.learning_rate === "number") lrChart.add(step, event.learning_rate);
      }
      if (!snapshot || lastStatus === null) showState(event);
      if (event.type === "log" && event.message) log(event.message);
      if (event.type === "metric" && event.metrics) log(`metrics: ${Object.entries(event.metrics).map(([k, v]) => `${k}=${formatNumber(v)}`).join(", ")}`);
      if (event.status && event.status !== lastStatus && event.type === "status") {
        lastStatus = event.status;
        log(`${event.status}${event.message ? `: ${event.message}` : ""}${event.error ? ` (${event.error})` : ""}`, event.error ? "error" : "");
      }
    },
    onState(text) {
      connection.textContent = text;
    },
    onEnd(event) {
      showState(event);
      stopButton.disabled = true;
      if (event.status === "completed" && event.model_id) {
        showMessage(outcome, h("span", {}, "Completed: model ", h("a", { href: `#/models/${encodeURIComponent(event.model_id)}` }, event.model_id), " · ", h("a", { href: `#/playground/${encodeURIComponent(event.model_id)}` }, "try it in the playground")), "success");
      } else if (event.status !== "completed") {
        showMessage(outcome, `Job ${event.status}: ${event.error || event.message || "no reason given"}`, "error");
      }
    },
  }).start();
  window.modelforgeConsole = { follower }; // a handle for debugging (and the browser test)

  stopButton.addEventListener("click", () =>
    withBusy(stopButton, box, async () => {
      const answer = await stopJob(jobId);
      log(`stop requested: ${(answer && answer.message) || "ok"}`);
    }),
  );
  return () => follower.stop();
}
