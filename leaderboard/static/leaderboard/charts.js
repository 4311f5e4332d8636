// Leaderboard charts, drawn with the plotly.min.js the server ships from the installed package.
// Data comes from a <script type="application/json"> block written by the page (json_script).
(function () {
  "use strict";

  var layoutBase = {margin: {l: 60, r: 20, t: 10, b: 120}, font: {family: "system-ui, sans-serif", size: 12}};
  var config = {responsive: true, displaylogo: false};

  function layout(extra) { return Object.assign({}, layoutBase, extra || {}); }

  function draw(id, traces, extra) {
    var element = document.getElementById(id);
    if (!element) { return; }
    if (!traces.length) { element.textContent = "No data yet."; return; }
    Plotly.newPlot(element, traces, layout(extra), config);
  }

  function byRating(models) {
    return models.slice().sort(function (a, b) { return b.rating - a.rating; });
  }

  function board(data) {
    var models = byRating(data.models);
    draw("chart-scores", models.length ? [{
      type: "scatter", mode: "markers", x: models.map(function (m) { return m.model; }),
      y: models.map(function (m) { return m.rating; }),
      error_y: {type: "data", symmetric: false, array: models.map(function (m) { return m.ci_plus || 0; }),
                arrayminus: models.map(function (m) { return m.ci_minus || 0; })},
      hovertemplate: "%{x}: %{y:.1f}<extra></extra>"
    }] : [], {yaxis: {title: {text: "score"}}});

    var matrices = data.matrices || {};
    var names = matrices.names || [];
    if (names.length) {
      draw("chart-win-fraction", [{
        type: "heatmap", x: names, y: names, z: matrices.win_fraction, zmin: 0, zmax: 1, colorscale: "RdBu",
        texttemplate: "%{z:.2f}", hovertemplate: "%{y} vs %{x}: %{z:.3f}<extra></extra>"
      }], {yaxis: {autorange: "reversed"}, margin: {l: 160, r: 20, t: 10, b: 160}});
      // A model never battles itself: leave the diagonal blank rather than a misleading zero.
      var counts = (matrices.battle_counts || []).map(function (row, i) {
        return row.map(function (value, j) { return i === j ? null : value; });
      });
      draw("chart-battle-counts", [{
        type: "heatmap", x: names, y: names, z: counts, colorscale: "Blues", reversescale: true,
        texttemplate: "%{z}", hovertemplate: "%{y} vs %{x}: %{z} battles<extra></extra>"
      }], {yaxis: {autorange: "reversed"}, margin: {l: 160, r: 20, t: 10, b: 160}});
    }

    var history = data.history || {};
    var traces = Object.keys(history).map(function (name) {
      var points = history[name];
      return {type: "scatter", mode: "lines+markers", name: name, x: points.map(function (p) { return p.at; }),
              y: points.map(function (p) { return p.rating; })};
    });
    draw("chart-history", traces, {yaxis: {title: {text: "score"}}, margin: {l: 60, r: 20, t: 10, b: 60}});
  }

  function model(data) {
    var matchups = data.matchups || [];
    draw("chart-matchups", matchups.length ? [
      {type: "bar", name: "observed", x: matchups.map(function (m) { return m.opponent; }),
       y: matchups.map(function (m) { return m.win_fraction; }),
       text: matchups.map(function (m) { return m.battles + " battles"; }),
       hovertemplate: "vs %{x}: %{y:.3f} (%{text})<extra></extra>"},
      {type: "scatter", mode: "markers", name: "predicted", x: matchups.map(function (m) { return m.opponent; }),
       y: matchups.map(function (m) { return m.predicted_win; })}
    ] : [], {yaxis: {title: {text: "win fraction"}, range: [0, 1]}});

    var speed = data.speed || {};
    draw("chart-speed", (speed.ttft || []).length || (speed.tpot || []).length ? [
      {type: "histogram", name: "time to first token (ms)", x: speed.ttft, opacity: 0.7},
      {type: "histogram", name: "time per output token (ms)", x: speed.tpot, opacity: 0.7, xaxis: "x2", yaxis: "y2"}
    ] : [], {grid: {rows: 1, columns: 2, pattern: "independent"}, margin: {l: 50, r: 20, t: 10, b: 50}});

    var history = data.history || [];
    draw("chart-model-history", history.length ? [
      {type: "scatter", mode: "lines", name: "upper", x: history.map(function (p) { return p.at; }),
       y: history.map(function (p) { return p.ci_upper; }), line: {width: 0}, showlegend: false},
      {type: "scatter", mode: "lines", name: "95% interval", x: history.map(function (p) { return p.at; }),
       y: history.map(function (p) { return p.ci_lower; }), fill: "tonexty", line: {width: 0}},
      {type: "scatter", mode: "lines+markers", name: "score", x: history.map(function (p) { return p.at; }),
       y: history.map(function (p) { return p.rating; })}
    ] : [], {yaxis: {title: {text: "score"}}, margin: {l: 60, r: 20, t: 10, b: 60}});
  }

  // One scatter plot per benchmark column: arena score against the benchmark value, one point per model.
  function benchmarks(data) {
    (data.correlations || []).forEach(function (item, index) {
      var points = item.points || [];
      function fixed(value) { return value === null ? "-" : value.toFixed(3); }
      var title = item.spearman === null ? item.message :
        "Spearman " + fixed(item.spearman) + ", Kendall " + fixed(item.kendall) + " (" + points.length + " models)";
      draw("chart-bench-" + index, points.length ? [{
        type: "scatter", mode: "markers+text", x: points.map(function (p) { return p.benchmark; }),
        y: points.map(function (p) { return p.arena; }), text: points.map(function (p) { return p.model; }),
        textposition: "top center", hovertemplate: "%{text}: %{x:.4g}, score %{y:.1f}<extra></extra>"
      }] : [], {xaxis: {title: {text: item.label}}, yaxis: {title: {text: "arena score"}},
                title: {text: title, font: {size: 12}}, margin: {l: 60, r: 20, t: 40, b: 60}});
    });
  }

  function start() {
    var boardData = document.getElementById("leaderboard-charts");
    if (boardData) { board(JSON.parse(boardData.textContent)); }
    var modelData = document.getElementById("model-charts");
    if (modelData) { model(JSON.parse(modelData.textContent)); }
    var benchmarkData = document.getElementById("benchmark-charts");
    if (benchmarkData) { benchmarks(JSON.parse(benchmarkData.textContent)); }
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
