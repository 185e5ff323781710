/* Charts drawn when they come near the screen (lazy.js), so the first screen never waits for them. A chart
   is a placeholder div of its final height (class "plotly-graph-div", data-figure="ID of its block",
   aria-busy until drawn) and a JSON block {"data": [...], "layout": {...}, "config": {...}} parsed only
   when the chart is drawn.
   plotly.js is inlined once as an inert block (id "plotly-js"), run when the first chart is drawn. Charts
   are drawn one per frame, so the page stays drawn and scrolls between two charts. */
(function () {
  "use strict";
  var queue = [], busy = false;
  function plotly() {
    if (!window.Plotly) {
      var script = document.createElement("script");
      script.textContent = document.getElementById("plotly-js").textContent;
      document.head.appendChild(script);
    }
    return window.Plotly;
  }
  function draw(div) {
    var block = document.getElementById(div.getAttribute("data-figure"));
    if (!block) { return; }
    div.removeAttribute("data-figure");
    var figure = JSON.parse(block.textContent);
    block.parentNode.removeChild(block);
    plotly().newPlot(div, figure.data, figure.layout, figure.config).then(function () {
      div.removeAttribute("aria-busy");
    });
  }
  function next() {
    busy = queue.length > 0;
    if (busy) {
      draw(queue.shift());
      lazy.nextFrame(next);
    }
  }
  lazy.near(document.querySelectorAll("div.plotly-graph-div[data-figure]"), function (div, now) {
    if (now) { draw(div); return; }
    queue.push(div);
    if (!busy) { next(); }
  });
})();
