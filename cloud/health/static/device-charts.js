// The device page's health charts (cloud/health/templates/health/device.html): fetches the
// page's charts.json and draws one uPlot chart per <figure data-chart>. Progressive
// enhancement only: without JavaScript the page shows the latest report's figures instead.
"use strict";

(function () {
  var PALETTE = ["#0b5cad", "#b3261e", "#1b7f3b", "#8a5a00"];

  function draw(container, data) {
    var series = data.series;
    var t = series.t;
    var status = container.querySelector(".charts-status");
    if (!t.length) {
      status.textContent = container.dataset.empty;
      return;
    }
    status.textContent = "";
    container.querySelectorAll("figure.chart").forEach(function (figure) {
      var keys = JSON.parse(figure.dataset.series);
      var labels = JSON.parse(figure.dataset.labels);
      var area = figure.querySelector(".chart-area");
      area.textContent = "";
      var columns = [t];
      var defs = [{}];
      keys.forEach(function (key, i) {
        columns.push(series[key] || []);
        defs.push({
          label: labels[i],
          stroke: PALETTE[i % PALETTE.length],
          width: 2,
          spanGaps: false,
          scale: key === "rssi_dbm" ? "dbm" : "y",
        });
      });
      var hasData = columns.slice(1).some(function (column) {
        return column.some(function (v) { return v !== null; });
      });
      if (!hasData) {
        var none = document.createElement("p");
        none.className = "muted";
        none.textContent = container.dataset.empty;
        area.appendChild(none);
        return;
      }
      var axes = [{}, { scale: "y" }];
      if (keys.indexOf("rssi_dbm") >= 0) {
        axes.push({ scale: "dbm", side: 1, grid: { show: false } });
      }
      var width = Math.max(280, Math.min(area.clientWidth || figure.clientWidth || 600, 1100));
      // eslint-disable-next-line no-undef
      var scales = { x: { time: true, range: [data.since, data.until] } };
      new uPlot({ width: width, height: 220, series: defs, axes: axes, scales: scales },
        columns, area);
    });
  }

  function load(container) {
    fetch(container.dataset.chartsUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error(String(response.status)); }
        return response.json();
      })
      .then(function (data) { draw(container, data); container.dataset.loaded = "true"; })
      .catch(function () {
        container.querySelector(".charts-status").textContent = container.dataset.failed;
      });
  }

  function start() {
    var container = document.getElementById("charts");
    if (container && typeof uPlot !== "undefined") {
      load(container);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
