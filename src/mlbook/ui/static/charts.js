// mlbook ui: curves of many runs with uPlot (vendored). One chart per metric.
// The server downsamples each series to the chart's pixel width, keeping each
// bucket's min and max (drawn as a band); smoothing and log-y are drawn here.
"use strict";
(function () {
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
    "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#ad494a", "#637939", "#e6550d", "#6b6ecf"];
  const state = new WeakMap();

  function smooth(ys, weight) {
    // TensorBoard's debiased exponential moving average; gaps stay gaps
    if (!weight) return ys;
    let last = 0, count = 0;
    return ys.map((y) => {
      if (y === null || y === undefined || !isFinite(y)) return y;
      last = last * weight + (1 - weight) * y;
      count += 1;
      return last / (1 - Math.pow(weight, count));
    });
  }

  function positive(values, logy) {
    if (!logy || !values) return values;
    return values.map((v) => (v !== null && v !== undefined && v > 0 ? v : null));
  }

  function alpha(color, a) {
    const n = parseInt(color.slice(1), 16);
    return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
  }

  function drawKey(container, key, curves, options, labels, runs) {
    const tables = [];
    const series = [{ label: options.x === "time" ? "seconds" : "step" }];
    const bands = [];
    const hidden = [];
    for (const curve of curves) {
      const color = PALETTE[runs.indexOf(curve.run) % PALETTE.length];
      const y = positive(smooth(curve.y, options.smooth), options.logy);
      const label = (labels[curve.run] || curve.run) + (curve.low ? ` (${curve.points} pts)` : "");
      const table = [curve.x, y];
      series.push({ label, stroke: color, width: 1.5, spanGaps: true, points: { show: false } });
      if (curve.low && options.band) {
        table.push(positive(curve.high, options.logy), positive(curve.low, options.logy));
        const hi = series.length;
        series.push({ label: "max", stroke: alpha(color, 0.25), width: 0.5, spanGaps: true, points: { show: false } });
        series.push({ label: "min", stroke: alpha(color, 0.25), width: 0.5, spanGaps: true, points: { show: false } });
        bands.push({ series: [hi, hi + 1], fill: alpha(color, 0.12) });
        hidden.push(hi, hi + 1);
      }
      tables.push(table);
    }
    const box = document.createElement("figure");
    box.className = "chart";
    box.dataset.key = key;
    const title = document.createElement("figcaption");
    title.textContent = key + (options.logy ? " (log y)" : "") + (options.smooth > 0 ? ` · smoothing ${options.smooth}` : "");
    box.appendChild(title);
    container.appendChild(box);
    if (!tables.length) {
      const empty = document.createElement("p");
      empty.className = "meta";
      empty.textContent = "no points";
      box.appendChild(empty);
      return;
    }
    const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
    const width = Math.max(container.clientWidth - 8, 300);
    const plot = new uPlot({
      width,
      height: 280,
      series,
      bands,
      scales: { x: { time: false }, y: { distr: options.logy ? 3 : 1 } },
      axes: [{ label: options.x === "time" ? "seconds since start" : "step" }, {}],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
    }, data, box);
    const rows = plot.root.querySelectorAll(".u-legend .u-series");
    for (const index of hidden) if (rows[index]) rows[index].style.display = "none";
  }

  function draw(container) {
    const s = state.get(container);
    if (!s || !s.curves) return;
    container.textContent = "";
    const options = {
      x: container.dataset.x || "step",
      logy: container.dataset.logy === "1",
      smooth: parseFloat(container.dataset.smooth || "0") || 0,
      band: container.dataset.band !== "0",
    };
    const labels = JSON.parse(container.dataset.labels || "{}");
    const runs = container.dataset.runs.split(",");
    for (const key of container.dataset.keys.split(",").filter(Boolean)) {
      drawKey(container, key, s.curves.filter((c) => c.key === key), options, labels, runs);
    }
  }

  async function load(container) {
    const started = performance.now();
    const width = Math.max(Math.round(container.clientWidth || 800), 100);
    const query = new URLSearchParams({
      runs: container.dataset.runs,
      keys: container.dataset.keys,
      x: container.dataset.x || "step",
      buckets: String(width),
    });
    const response = await fetch("/api/curves?" + query.toString());
    const body = await response.json();
    if (!response.ok) {
      container.textContent = "";
      const error = document.createElement("p");
      error.className = "error";
      error.textContent = body.error || response.statusText;
      container.appendChild(error);
      container.dataset.state = "error";
      return;
    }
    state.set(container, { curves: body.curves });
    draw(container);
    container.dataset.state = "drawn";
    container.dataset.ms = String(Math.round(performance.now() - started));
  }

  function wireControls(container) {
    const form = document.getElementById("curve-controls");
    if (!form) return;
    const redraw = () => {
      container.dataset.logy = form.querySelector('[name="logy"]').checked ? "1" : "0";
      container.dataset.band = form.querySelector('input[type="checkbox"][name="band"]').checked ? "1" : "0";
      const slider = form.querySelector('[name="smooth"]');
      container.dataset.smooth = slider.value;
      form.querySelector("output").textContent = slider.value;
      const url = new URL(window.location.href);
      url.searchParams.set("logy", container.dataset.logy);
      url.searchParams.set("smooth", slider.value);
      url.searchParams.set("band", container.dataset.band);
      window.history.replaceState(null, "", url);
      draw(container);
    };
    form.addEventListener("input", (event) => {
      const name = event.target.name;
      if (name === "logy" || name === "smooth" || name === "band") redraw();
    });
    form.addEventListener("change", (event) => {
      if (event.target.name === "x" || event.target.name === "keys") form.requestSubmit();
    });
  }

  function start() {
    for (const container of document.querySelectorAll(".charts[data-runs]")) {
      load(container);
      wireControls(container);
      if (container.dataset.live === "1") {
        setInterval(() => { if (!document.hidden) load(container); }, 2000);
      }
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
