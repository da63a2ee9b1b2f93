// Follows one job's events over WS /ws/training?job_id=X&since=N across dropped connections:
// each event once (de-duplicated by its per-job `seq`), and after a drop it reconnects asking for
// what came after the last event it has, so the gap is filled.

import { apiKey, wsUrl } from "./api.js";

const TERMINAL = new Set(["completed", "error", "stopped", "failed", "cancelled"]);
// How long to wait for a replay after a snapshot that says the job has ended.
const REPLAY_WAIT_MS = 1500;
const IGNORED_TYPES = new Set(["heartbeat", "ping", "pong", "keepalive"]);

export const isTerminal = (event) => TERMINAL.has(event.status);

export class JobFollower {
  // handlers: onEvent(event), onState(text) for the connection line, onEnd(event) once at the end.
  constructor(jobId, { onEvent, onState, onEnd }) {
    this.jobId = jobId;
    this.onEvent = onEvent;
    this.onState = onState || (() => {});
    this.onEnd = onEnd || (() => {});
    this.seen = new Set();
    this.lastSeq = 0; // every seq up to this one was shown (0: ask for the whole history)
    this.failures = 0;
    this.closed = false;
    this.socket = null;
    this.reconnects = 0;
    this.endingWith = null;
  }

  start() {
    this.connect();
    return this;
  }

  // Drops the current socket without stopping: a reconnect follows (used by the browser test).
  dropConnection() {
    if (this.socket) this.socket.close(4999, "dropped by the console");
  }

  stop() {
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.endTimer);
    if (this.socket) this.socket.close(1000, "page left");
  }

  connect() {
    if (this.closed) return;
    // A browser cannot set headers on a WebSocket: the gateway takes the key as `access_token`.
    const query = { job_id: this.jobId, since: String(this.lastSeq), access_token: apiKey() };
    const socket = new WebSocket(wsUrl("/ws/training", query));
    this.socket = socket;
    this.onState(this.reconnects ? `reconnecting after event ${this.lastSeq}…` : "connecting…");
    socket.addEventListener("open", () => {
      this.failures = 0;
      this.onState(this.reconnects ? `live (reconnected ${this.reconnects}×, resumed after event ${this.lastSeq})` : "live");
    });
    let first = true;
    socket.addEventListener("message", (message) => {
      this.receive(message.data, first);
      first = false;
    });
    socket.addEventListener("close", (close) => {
      if (socket !== this.socket || this.closed) return;
      if (close.code === 1008 && /not found/i.test(close.reason)) {
        this.closed = true;
        this.onState(`the gateway does not know job ${this.jobId}`);
        return;
      }
      this.failures += 1;
      this.reconnects += 1;
      const delay = Math.min(5000, 250 * 2 ** (this.failures - 1));
      this.onState(`connection lost (${close.code || "no close frame"}); reconnecting in ${(delay / 1000).toFixed(1)} s`);
      this.timer = setTimeout(() => this.connect(), delay);
    });
  }

  // The first message of a connection is the job's current status, a snapshot that may be ahead of
  // what the replay is about to send: it is shown but its seq is not recorded, so the replayed
  // original event of that seq still arrives.
  receive(raw, firstOnConnection = false) {
    let event;
    try {
      event = JSON.parse(raw);
    } catch {
      return;
    }
    if (!event || typeof event !== "object" || IGNORED_TYPES.has(event.type)) return;
    if (event.job_id && event.job_id !== this.jobId) return;
    const snapshot = firstOnConnection && event.type === "status";
    const seq = !snapshot && Number.isInteger(event.seq) && event.seq > 0 ? event.seq : null;
    if (seq !== null) {
      if (this.seen.has(seq)) return;
      this.seen.add(seq);
      while (this.seen.has(this.lastSeq + 1)) this.lastSeq += 1;
    }
    clearTimeout(this.endTimer);
    this.onEvent(event, { snapshot });
    if (this.endingWith && this.allBefore(this.endingWith)) {
      this.finish(this.endingWith);
      return;
    }
    if (!isTerminal(event)) {
      if (this.endingWith) this.endTimer = setTimeout(() => this.finish(this.endingWith), REPLAY_WAIT_MS);
      return;
    }
    if (snapshot || !this.allBefore(event)) {
      // The job has ended, but events before its end are still to come: the replay of its history
      // (after a snapshot), or live ones that arrived later than the terminal one. Wait for them.
      this.endingWith = event;
      this.endTimer = setTimeout(() => this.finish(event), REPLAY_WAIT_MS);
      return;
    }
    this.finish(event);
  }

  // Whether every event up to (not including) this one has been shown.
  allBefore(event) {
    return Number.isInteger(event.seq) && event.seq > 0 && this.lastSeq >= event.seq - 1;
  }

  finish(event) {
    if (this.closed) return;
    this.closed = true;
    if (this.socket) this.socket.close(1000, "job ended");
    this.onState(`job ${event.status}`);
    this.onEnd(event);
  }
}
