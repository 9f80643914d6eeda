// mlbook ui: parallel coordinates over params and one metric, on a canvas.
// Drag along an axis to brush a range; the brushes become filter expressions in
// the grammar of `mlbook runs` (params.lr>=0.001 params.opt!=sgd acc>=0.9), and
// the runs table below is reloaded with them.
"use strict";
(function () {
  const root = document.getElementById("parallel");
  if (!root) return;
  const canvas = document.getElementById("parallel-canvas");
  const status = document.getElementById("parallel-status");
  const boxes = document.getElementById("axis-boxes");
  const context = canvas.getContext("2d");
  const PAD = { left: 50, right: 60, top: 24, bottom: 36 };
  let data = null;
  let axes = [];          // [{name, field, kind: "number"|"category", values, min, max, cats}]
  const brushes = {};      // axis name -> [low, high] in data units (numbers) or Set (categories)
  let dragging = null;

  function quote(value) {
    const text = String(value);
    return /[\s'"]/.test(text) ? `'${text.replace(/'/g, "")}'` : text;
  }

  function buildAxes() {
    const chosen = [...boxes.querySelectorAll("input:checked")].map((b) => b.value);
    axes = chosen.map((name) => axisOf(name, `params.${name}`, data.runs.map((r) => r.params[name])));
    if (data.metric) axes.push(axisOf(data.metric, data.metric, data.runs.map((r) => r.value)));
  }

  function axisOf(name, field, values) {
    const present = values.filter((v) => v !== undefined && v !== null);
    const numeric = present.length > 0 && present.every((v) => typeof v === "number");
    if (numeric) {
      let min = Math.min(...present), max = Math.max(...present);
      if (min === max) { min -= 1; max += 1; }
      return { name, field, kind: "number", values, min, max };
    }
    const cats = [...new Set(present.map(String))].sort();
    return { name, field, kind: "category", values: values.map((v) => (v === undefined || v === null ? null : String(v))), cats };
  }

  function xOf(index) {
    const span = canvas.width - PAD.left - PAD.right;
    return PAD.left + (axes.length < 2 ? span / 2 : (span * index) / (axes.length - 1));
  }

  function yOf(axis, value) {
    const span = canvas.height - PAD.top - PAD.bottom;
    if (value === null || value === undefined) return null;
    if (axis.kind === "number") return PAD.top + span * (1 - (value - axis.min) / (axis.max - axis.min));
    const at = axis.cats.indexOf(value);
    return PAD.top + span * (axis.cats.length < 2 ? 0.5 : 1 - at / (axis.cats.length - 1));
  }

  function inBrush(axis, value) {
    const brush = brushes[axis.name];
    if (!brush) return true;
    if (value === null || value === undefined) return false;
    if (axis.kind === "number") return value >= brush[0] && value <= brush[1];
    return brush.has(value);
  }

  function colour(t) {
    // blue (low) to orange (high)
    const a = [49, 104, 142], b = [253, 150, 40];
    const mix = a.map((v, i) => Math.round(v + (b[i] - v) * t));
    return `rgb(${mix[0]}, ${mix[1]}, ${mix[2]})`;
  }

  function draw() {
    context.clearRect(0, 0, canvas.width, canvas.height);
    if (!axes.length) return;
    const metricAxis = data.metric ? axes[axes.length - 1] : null;
    const selected = [];
    const others = [];
    data.runs.forEach((run, i) => {
      (axes.every((axis) => inBrush(axis, axis.values[i])) ? selected : others).push(i);
    });
    const line = (i, style, width) => {
      context.strokeStyle = style;
      context.lineWidth = width;
      context.beginPath();
      let started = false;
      axes.forEach((axis, a) => {
        const y = yOf(axis, axis.values[i]);
        if (y === null) { started = false; return; }
        if (started) context.lineTo(xOf(a), y); else context.moveTo(xOf(a), y);
        started = true;
      });
      context.stroke();
    };
    for (const i of others) line(i, "rgba(160, 160, 160, 0.25)", 1);
    for (const i of selected) {
      const v = metricAxis && metricAxis.kind === "number" ? metricAxis.values[i] : null;
      const t = v === null ? 0.5 : (v - metricAxis.min) / (metricAxis.max - metricAxis.min);
      line(i, colour(t), 1.2);
    }
    context.fillStyle = "#222";
    context.font = "12px system-ui, sans-serif";
    context.textAlign = "center";
    axes.forEach((axis, a) => {
      const x = xOf(a);
      context.strokeStyle = "#444";
      context.lineWidth = 1;
      context.beginPath();
      context.moveTo(x, PAD.top);
      context.lineTo(x, canvas.height - PAD.bottom);
      context.stroke();
      context.fillText(axis.name + (axis === metricAxis ? " (metric)" : ""), x, canvas.height - PAD.bottom + 18);
      const labels = axis.kind === "number" ? [axis.max, axis.min] : axis.cats;
      context.textAlign = "right";
      for (const label of labels.slice(0, 12)) {
        const y = yOf(axis, label);
        context.fillText(typeof label === "number" ? Number(label.toPrecision(4)) : label, x - 4, y + 4);
      }
      context.textAlign = "center";
      const brush = brushes[axis.name];
      if (brush) {
        context.fillStyle = "rgba(31, 119, 180, 0.18)";
        const ys = axis.kind === "number" ? [yOf(axis, brush[1]), yOf(axis, brush[0])]
          : [Math.min(...[...brush].map((c) => yOf(axis, c))) - 6, Math.max(...[...brush].map((c) => yOf(axis, c))) + 6];
        context.fillRect(x - 8, ys[0], 16, Math.max(ys[1] - ys[0], 2));
        context.fillStyle = "#222";
      }
    });
    status.textContent = `${selected.length} of ${data.runs.length} runs in the brushes` +
      (data.truncated ? " (only the newest 10,000 runs are drawn)" : "") +
      " · drag along an axis to brush, click it to clear";
  }

  function filters() {
    const parts = [];
    for (const axis of axes) {
      const brush = brushes[axis.name];
      if (!brush) continue;
      if (axis.kind === "number") {
        const inside = axis.values.filter((v) => v !== null && v !== undefined && v >= brush[0] && v <= brush[1]);
        const low = inside.length ? Math.min(...inside) : brush[0];
        const high = inside.length ? Math.max(...inside) : brush[0] - 1;
        parts.push(`${axis.field}>=${low}`, `${axis.field}<=${high}`);
      } else {
        for (const cat of axis.cats) if (!brush.has(cat)) parts.push(`${axis.field}!=${quote(cat)}`);
      }
    }
    return parts;
  }

  function loadTable() {
    const q = [root.dataset.q, ...filters()].filter(Boolean).join(" ");
    const cols = ["experiment", "version", "status", ...axes.map((a) => (a.field.startsWith("params.") ? a.field : `metrics.${a.field}`))];
    const url = "/?" + new URLSearchParams({ q, cols: cols.join(",") }).toString();
    status.dataset.query = q;
    htmx.ajax("GET", url, { target: "#runs", select: "#runs", swap: "outerHTML" });
  }

  function axisAt(x) {
    let best = -1, distance = 20;
    axes.forEach((axis, a) => {
      const d = Math.abs(xOf(a) - x);
      if (d < distance) { best = a; distance = d; }
    });
    return best;
  }

  function point(event) {
    const rect = canvas.getBoundingClientRect();
    return [(event.clientX - rect.left) * (canvas.width / rect.width), (event.clientY - rect.top) * (canvas.height / rect.height)];
  }

  function valueRange(axis, y0, y1) {
    const span = canvas.height - PAD.top - PAD.bottom;
    const [top, bottom] = [Math.min(y0, y1), Math.max(y0, y1)];
    if (axis.kind === "number") {
      const at = (y) => axis.min + (1 - (y - PAD.top) / span) * (axis.max - axis.min);
      return [at(bottom), at(top)];
    }
    return new Set(axis.cats.filter((c) => { const y = yOf(axis, c); return y >= top - 6 && y <= bottom + 6; }));
  }

  canvas.addEventListener("mousedown", (event) => {
    const [x, y] = point(event);
    const a = axisAt(x);
    if (a >= 0) dragging = { axis: axes[a], from: y, moved: false };
  });
  canvas.addEventListener("mousemove", (event) => {
    if (!dragging) return;
    const [, y] = point(event);
    if (Math.abs(y - dragging.from) < 3) return;
    dragging.moved = true;
    brushes[dragging.axis.name] = valueRange(dragging.axis, dragging.from, y);
    draw();
  });
  window.addEventListener("mouseup", () => {
    if (!dragging) return;
    if (!dragging.moved) delete brushes[dragging.axis.name];
    dragging = null;
    draw();
    loadTable();
  });

  function checkboxes(names, chosen) {
    boxes.textContent = "";
    for (const name of names) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = name;
      box.checked = chosen.includes(name);
      label.append(box, " " + name + " ");
      boxes.appendChild(label);
    }
  }

  function refresh() {
    buildAxes();
    for (const name of Object.keys(brushes)) if (!axes.some((a) => a.name === name)) delete brushes[name];
    draw();
    loadTable();
  }
  boxes.addEventListener("change", refresh);
  document.getElementById("axes-all").addEventListener("click", () => {
    for (const box of boxes.querySelectorAll("input")) box.checked = true;
    refresh();
  });
  document.getElementById("axes-none").addEventListener("click", () => {
    for (const box of boxes.querySelectorAll("input")) box.checked = false;
    refresh();
  });

  async function start() {
    canvas.width = Math.max(root.clientWidth, 600);
    const query = new URLSearchParams({ q: root.dataset.q, metric: root.dataset.metric });
    const response = await fetch("/api/parallel?" + query.toString());
    data = await response.json();
    if (!response.ok) { status.textContent = data.error; return; }
    const asked = root.dataset.axes ? root.dataset.axes.split(",") : [];
    // by default, the params that vary between the runs
    const varying = data.params.filter((name) => new Set(data.runs.map((r) => JSON.stringify(r.params[name]))).size > 1);
    checkboxes(data.params, asked.length ? asked : varying.slice(0, 10));
    refresh();
    root.dataset.state = "drawn";
  }
  start();
})();
