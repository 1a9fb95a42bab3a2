// The instance page's usage charts: CPU and memory against the instance's limits, with uPlot.
//
// templates/pages/instance.html loads this after app.js and uPlot, on that page only. No
// inline script (the CSP refuses it): the [data-usage] section is found on htmx:load, as
// app.js finds [data-logs]. The history comes from the section's data-usage URL through
// app.js's signed fetch; the range buttons keep the chosen range in the page's URL
// (?range=6h), so a reload draws the same range. While the page is open the chart is
// redrawn every data-usage-refresh seconds (the node samples that often).
"use strict";

(() => {
  const MEASURES = [
    { key: "cpu", label: "CPU", value: (p) => p.cpu_millicores, limit: (s) => s.cpu_limit_millicores, format: cpu },
    { key: "memory", label: "Memory", value: (p) => p.memory_bytes, limit: (s) => s.memory_limit_bytes, format: bytes },
  ];

  function cpu(millicores) {
    if (millicores == null) return "";
    return millicores >= 1000 ? String(+(millicores / 1000).toFixed(2)) : Math.round(millicores) + "m";
  }

  function bytes(size) {
    if (size == null) return "";
    for (const [suffix, factor] of [["Gi", 2 ** 30], ["Mi", 2 ** 20], ["Ki", 2 ** 10]]) {
      if (size >= factor) return String(+(size / factor).toFixed(1)) + suffix;
    }
    return String(Math.round(size));
  }

  function chosenRange(section) {
    const ranges = [...section.querySelectorAll("[data-usage-range]")].map((b) => b.dataset.usageRange);
    const asked = new URLSearchParams(location.search).get("range");
    return ranges.includes(asked) ? asked : section.dataset.usageDefault;
  }

  function keepRangeInUrl(range) {
    const url = new URL(location.href);
    url.searchParams.set("range", range);
    history.replaceState(history.state, "", url);
  }

  function draw(figure, measure, series, charts) {
    const xs = series.points.map((p) => Date.parse(p.at) / 1000);
    const ys = series.points.map(measure.value);
    const limit = measure.limit(series);
    const top = Math.max(limit, ...ys, 1);
    const data = [xs, ys];
    const lines = [{}, { label: measure.label, stroke: "#2563eb", fill: "rgba(37, 99, 235, 0.12)", width: 1.5, value: (u, v) => measure.format(v) }];
    if (limit > 0) {
      data.push(xs.map(() => limit));
      lines.push({ label: "limit", stroke: "#dc2626", dash: [6, 4], width: 1, value: (u, v) => measure.format(v) });
    }
    const options = {
      width: Math.max(figure.clientWidth, 320),
      height: 160,
      series: lines,
      scales: { y: { range: [0, top * 1.1] } },
      axes: [{}, { size: 60, values: (u, values) => values.map(measure.format) }],
    };
    if (charts[measure.key]) charts[measure.key].destroy();
    figure.replaceChildren();
    charts[measure.key] = new uPlot(options, data, figure);
  }

  function summarize(series) {
    const points = series.points;
    if (!points.length) {
      return "No samples in the last " + series.range + " yet: the node samples its instances every " + series.step_seconds + " s while they run.";
    }
    const parts = MEASURES.map((m) => {
      const values = points.map(m.value);
      const peak = Math.max(...values);
      const limit = m.limit(series);
      const of = limit > 0 ? " of " + m.format(limit) + " (" + Math.round((100 * peak) / limit) + "%)" : " (no limit)";
      return m.label + " peak " + m.format(peak) + of;
    });
    const restarts = points[points.length - 1].restarts - points[0].restarts;
    parts.push(restarts + " restart(s)");
    return parts.join(" · ") + " in the last " + series.range + ", one point every " + series.step_seconds + " s.";
  }

  function startUsage(section) {
    if (section.dataset.usageStarted) return;
    section.dataset.usageStarted = "yes";
    const charts = {};
    const summary = section.querySelector("[data-usage-summary]");
    let range = chosenRange(section);

    async function load() {
      for (const button of section.querySelectorAll("[data-usage-range]")) {
        button.setAttribute("aria-pressed", String(button.dataset.usageRange === range));
      }
      const asked = range;
      const url = section.dataset.usage + "?range=" + encodeURIComponent(asked);
      const response = await window.shoalUi.signedFetch("GET", url, null);
      if (asked !== range) return; // another range was chosen meanwhile
      if (!response.ok) {
        let message = response.status + " " + response.statusText;
        try { message = (await response.json()).error.message; } catch (e) { /* keep the status */ }
        summary.textContent = "Usage history unavailable: " + message;
        return;
      }
      const series = await response.json();
      section.dataset.usageShown = series.range;
      summary.textContent = summarize(series);
      for (const measure of MEASURES) {
        draw(section.querySelector('[data-usage-chart="' + measure.key + '"]'), measure, series, charts);
      }
    }

    function reload() {
      load().catch((error) => { summary.textContent = "Usage history unavailable: " + error; });
    }

    for (const button of section.querySelectorAll("[data-usage-range]")) {
      button.addEventListener("click", () => {
        range = button.dataset.usageRange;
        keepRangeInUrl(range);
        reload();
      });
    }
    const every = Number(section.dataset.usageRefresh) * 1000;
    const timer = setInterval(() => { if (section.isConnected) reload(); }, every);
    section.addEventListener("htmx:beforeCleanupElement", () => {
      clearInterval(timer);
      for (const chart of Object.values(charts)) chart.destroy();
    });
    reload();
  }

  document.addEventListener("htmx:load", (evt) => {
    const elt = evt.detail.elt;
    if (!(elt instanceof Element)) return;
    if (elt.matches("[data-usage]")) startUsage(elt);
    for (const section of elt.querySelectorAll("[data-usage]")) startUsage(section);
  });
})();
