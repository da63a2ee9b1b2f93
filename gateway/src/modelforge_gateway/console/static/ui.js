// DOM helpers shared by the pages: element builder, tables, error and status messages.

import { formatNumber } from "./chart.js";

// h("button", {type: "button", onclick: fn, class: "x"}, "text", child, ...) -> element.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") element.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(key, "");
    else element.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function cell(value) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : formatNumber(value);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// A table of `rows` (objects) with columns [[key, heading], ...]; `link(row)` may return an href
// for the first column.
export function table(rows, columns, { caption, link } = {}) {
  const head = h("tr", {}, columns.map(([, heading]) => h("th", { scope: "col" }, heading)));
  const body = rows.map((row) =>
    h(
      "tr",
      {},
      columns.map(([key], index) => {
        const text = cell(row[key]);
        const href = index === 0 && link ? link(row) : null;
        return h("td", { "data-label": columns[index][1] }, href ? h("a", { href }, text) : text);
      }),
    ),
  );
  return h("div", { class: "table-wrap" }, h("table", {}, caption ? h("caption", {}, caption) : null, h("thead", {}, head), h("tbody", {}, body)));
}

// A two-column table of an object's fields (nested objects as JSON).
export function fieldsTable(object, caption, skip = []) {
  const rows = Object.entries(object || {})
    .filter(([key]) => !skip.includes(key))
    .map(([key, value]) => h("tr", {}, h("th", { scope: "row" }, key), h("td", {}, cell(value))));
  return h("div", { class: "table-wrap" }, h("table", { class: "fields" }, caption ? h("caption", {}, caption) : null, h("tbody", {}, rows)));
}

// Replaces the content of `box` (a role=alert region) with the error's one-line message and, for
// validation errors, each problem on its own line.
export function showError(box, error) {
  box.hidden = false;
  box.className = "message error";
  const problems = error && error.problems && error.problems.length > 1 ? error.problems : [];
  box.replaceChildren(
    h("strong", {}, "Error: "),
    h("span", { class: "error-text" }, error && error.message ? error.message : String(error)),
    problems.length ? h("ul", {}, problems.map((problem) => h("li", {}, problem))) : null,
  );
}

export function showMessage(box, text, kind = "info") {
  box.hidden = false;
  box.className = `message ${kind}`;
  box.replaceChildren(text instanceof Node ? text : document.createTextNode(text));
}

export function clearMessage(box) {
  box.hidden = true;
  box.replaceChildren();
}

export function alertBox() {
  return h("div", { class: "message", role: "alert", hidden: true });
}

// Runs `action` with `button` disabled and marked busy; errors go to `box`.
export async function withBusy(button, box, action) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  clearMessage(box);
  try {
    return await action();
  } catch (error) {
    showError(box, error);
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

// A labelled form control: field("Learning rate", h("input", {...})) with a matching id.
let fieldCounter = 0;
export function field(label, control, hint) {
  fieldCounter += 1;
  const id = control.id || `field-${fieldCounter}`;
  control.id = id;
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("small", { id: hintId }, hint) : null);
}

export function select(name, options, selected) {
  return h(
    "select",
    { name },
    options.map((option) => {
      const [value, text] = Array.isArray(option) ? option : [option, option];
      return h("option", { value, selected: value === selected }, text);
    }),
  );
}
