// A small SVG line chart (no library): one series of (step, value) points with labelled axes.

const SVG_NS = "http://www.w3.org/2000/svg";
const WIDTH = 600;
const HEIGHT = 220;
const PAD = { left: 64, right: 12, top: 14, bottom: 30 };

function node(name, attributes = {}, text = "") {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text) element.textContent = text;
  return element;
}

export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e5)) return value.toExponential(2);
  return Number(value.toPrecision(4)).toString();
}

export class LineChart {
  // title: shown above the plot and used as the accessible name; seriesClass: CSS class of the line.
  constructor(title, seriesClass) {
    this.title = title;
    this.points = new Map(); // step -> value (a replayed step replaces, never duplicates)
    this.svg = node("svg", {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: "img",
      "aria-label": title,
      class: `chart ${seriesClass}`,
      "data-points": 0,
    });
    this.render();
  }

  add(step, value) {
    if (!Number.isFinite(step) || !Number.isFinite(value)) return;
    this.points.set(step, value);
    this.render();
  }

  get size() {
    return this.points.size;
  }

  render() {
    const svg = this.svg;
    svg.replaceChildren(node("title", {}, this.title));
    svg.setAttribute("data-points", this.points.size);
    const points = [...this.points.entries()].sort((a, b) => a[0] - b[0]);
    const plotW = WIDTH - PAD.left - PAD.right;
    const plotH = HEIGHT - PAD.top - PAD.bottom;
    svg.append(node("rect", { x: PAD.left, y: PAD.top, width: plotW, height: plotH, class: "plot-area" }));
    if (!points.length) {
      svg.append(node("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "empty" }, "waiting for data…"));
      return;
    }
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    let [xMin, xMax] = [Math.min(...xs), Math.max(...xs)];
    let [yMin, yMax] = [Math.min(...ys), Math.max(...ys)];
    if (xMin === xMax) [xMin, xMax] = [xMin - 1, xMax + 1];
    if (yMin === yMax) [yMin, yMax] = [yMin - Math.abs(yMin || 1) * 0.1, yMax + Math.abs(yMax || 1) * 0.1];
    const sx = (x) => PAD.left + ((x - xMin) / (xMax - xMin)) * plotW;
    const sy = (y) => PAD.top + (1 - (y - yMin) / (yMax - yMin)) * plotH;
    for (const fraction of [0, 0.5, 1]) {
      const value = yMin + fraction * (yMax - yMin);
      const y = sy(value);
      svg.append(node("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y, class: "grid" }));
      svg.append(node("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end", class: "tick" }, formatNumber(value)));
    }
    svg.append(node("text", { x: sx(xMin), y: HEIGHT - 10, "text-anchor": "start", class: "tick" }, `step ${Math.round(xMin)}`));
    svg.append(node("text", { x: sx(xMax), y: HEIGHT - 10, "text-anchor": "end", class: "tick" }, `step ${Math.round(xMax)}`));
    const path = points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    svg.append(node("polyline", { points: path, class: "series" }));
    for (const [x, y] of points) {
      const dot = node("circle", { cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 3, class: "point" });
      dot.append(node("title", {}, `step ${x}: ${formatNumber(y)}`));
      svg.append(dot);
    }
  }
}
