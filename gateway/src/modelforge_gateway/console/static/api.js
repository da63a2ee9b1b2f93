// The console's only way to the platform: the gateway's public REST, SSE and WebSocket API.
// Every failure becomes an ApiProblem whose message is one readable line.

const API_KEY_STORAGE = "modelforge.apiKey";

export function apiKey() {
  return localStorage.getItem(API_KEY_STORAGE) || "";
}

export function setApiKey(value) {
  if (value) localStorage.setItem(API_KEY_STORAGE, value);
  else localStorage.removeItem(API_KEY_STORAGE);
}

export class ApiProblem extends Error {
  constructor(method, path, status, body) {
    const detail = formatDetail(body);
    super(status ? `${method} ${path} → ${status}: ${detail}` : `${method} ${path}: ${detail}`);
    this.status = status;
    this.body = body;
    this.problems = problemsOf(body);
  }

  // A 404/405 with the framework's bare "Not Found": the gateway has no such route (an older one).
  get routeMissing() {
    const detail = this.body && typeof this.body === "object" ? this.body.detail : this.body;
    return this.status === 405 || (this.status === 404 && String(detail).trim().toLowerCase() === "not found");
  }
}

function formatProblem(item) {
  if (!item || typeof item !== "object") return String(item);
  const where = Array.isArray(item.loc) ? item.loc.join(".") : item.loc || "";
  const msg = item.msg || item.message || "";
  return where ? `${where}: ${msg}` : msg;
}

export function formatDetail(body) {
  if (body == null || body === "") return "(no detail)";
  if (typeof body !== "object") return String(body);
  const detail = body.detail ?? body.error ?? body.message ?? body;
  if (Array.isArray(detail)) return detail.map(formatProblem).join("; ") || "(no detail)";
  if (detail && typeof detail === "object") return detail.message || detail.msg || JSON.stringify(detail);
  return String(detail);
}

function problemsOf(body) {
  const detail = body && typeof body === "object" ? body.detail : null;
  return Array.isArray(detail) ? detail.map(formatProblem) : [];
}

function headers(extra = {}) {
  const all = { ...extra };
  const key = apiKey();
  if (key) all.Authorization = `Bearer ${key}`;
  return all;
}

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

// request("GET", "/api/models", {query: {...}, json: {...}, form: FormData}) -> the decoded JSON body.
export async function request(method, path, { query, json, form } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const init = { method, headers: headers() };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    throw new ApiProblem(method, path, 0, `cannot reach the gateway (${error.message})`);
  }
  const body = await readBody(response);
  if (!response.ok) throw new ApiProblem(method, path, response.status, body);
  return body;
}

export const get = (path, options) => request("GET", path, options);
export const post = (path, options) => request("POST", path, options);
export const del = (path, options) => request("DELETE", path, options);

// POSTs `json` and calls onEvent(object) for each Server-Sent Event `data:` line as it arrives.
// An `event: error` (a failure after the stream began) throws its error body as an ApiProblem.
export async function postStream(path, json, onEvent, signal) {
  let response;
  try {
    response = await fetch(new URL(path, window.location.origin), {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify(json),
      signal,
    });
  } catch (error) {
    throw new ApiProblem("POST", path, 0, `cannot reach the gateway (${error.message})`);
  }
  if (!response.ok) throw new ApiProblem("POST", path, response.status, await readBody(response));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let eventName = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
      if (line === "") {
        eventName = "";
      } else if (line.startsWith("event:")) {
        eventName = line.slice(6).trim();
      } else if (line.startsWith("data:")) {
        const payload = line.slice(5).trim();
        if (!payload || payload === "[DONE]") continue;
        const data = JSON.parse(payload);
        if (eventName === "error") throw new ApiProblem("POST", path, data.status_code || 500, data);
        onEvent(data);
      }
    }
  }
}

export function itemsOf(body, key) {
  const list = Array.isArray(body) ? body : body && Array.isArray(body[key]) ? body[key] : [];
  return list.filter((item) => item && typeof item === "object");
}

export function wsUrl(path, query) {
  const url = new URL(path, window.location.origin);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  return url.toString();
}
