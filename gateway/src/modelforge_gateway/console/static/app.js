// The console shell: a hash router (#/section/param) that renders one page module into <main>.

import { h } from "./ui.js";
import * as datasets from "./pages/datasets.js";
import * as hardware from "./pages/hardware.js";
import * as jobs from "./pages/jobs.js";
import * as models from "./pages/models.js";
import * as playground from "./pages/playground.js";
import * as settings from "./pages/settings.js";
import * as train from "./pages/train.js";

// section -> [page title, render(main, param) -> optional cleanup function]
const ROUTES = {
  hardware: ["Hardware and recommendations", hardware.render],
  datasets: ["Datasets", datasets.render],
  train: ["New training", train.render],
  jobs: ["Jobs", jobs.renderList],
  job: ["Job", jobs.renderJob],
  models: ["Models", models.renderList],
  model: ["Model", models.renderModel],
  playground: ["Playground", playground.render],
  settings: ["Settings", settings.render],
};

let cleanup = null;

function parseHash() {
  const parts = window.location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const [section = "hardware", param = ""] = parts;
  if (section === "jobs" && param) return ["job", param];
  if (section === "models" && param) return ["model", param];
  return [ROUTES[section] ? section : "hardware", param];
}

async function show() {
  if (cleanup) cleanup();
  cleanup = null;
  const [section, param] = parseHash();
  const [title, render] = ROUTES[section];
  const main = document.getElementById("main");
  const focusedBefore = document.activeElement;
  const navSection = { job: "jobs", model: "models" }[section] || section;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.section === navSection) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  // Job and model pages name their subject; elsewhere the parameter only preselects (a dataset, a model).
  const heading = param && (section === "job" || section === "model") ? `${title} ${param}` : title;
  document.title = `${heading} · ModelForge`;
  main.replaceChildren(h("h1", {}, heading));
  main.dataset.page = section;
  try {
    cleanup = (await render(main, param)) || null;
  } catch (error) {
    main.append(h("div", { class: "message error", role: "alert" }, `Error: ${error.message}`));
  }
  // Keyboard users who followed a nav link land on the new page, not in the nav. Focus the user moved
  // while the page loaded (the skip link, a field) stays where they put it.
  const focused = document.activeElement;
  if (focused && focused === focusedBefore && focused !== document.body && !main.contains(focused)) {
    main.focus({ preventScroll: true });
  }
}

// The skip link moves focus only: its "#main" would otherwise be read as a route.
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  document.getElementById("main").focus();
});

window.addEventListener("hashchange", show);
show();
