/* Charts drawn when they come near the screen, so the first screen never waits for them. A chart is a
   placeholder div of its final height (class "plotly-graph-div", data-figure="ID of its block") and a
   JSON block {"data": [...], "layout": {...}, "config": {...}} that is parsed only when the chart is drawn.
   plotly.js is inlined once as an inert block (id "plotly-js") and run on the first chart's demand. Nothing
   starts before the page's load event and its first paint; then a chart is drawn once it is within a
   screen of the view (IntersectionObserver), one chart per frame so the screen is drawn between two charts, and every
   chart before printing. */
(function () {
  "use strict";
  var MARGIN = "100% 0px";  // draw a chart when it is within one screen height of the view
  var waiting = Array.prototype.slice.call(document.querySelectorAll("div.plotly-graph-div[data-figure]"));
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
    plotly().newPlot(div, figure.data, figure.layout, figure.config);
  }
  function next() {
    busy = queue.length > 0;
    if (busy) {
      draw(queue.shift());
      later(next);
    }
  }
  function soon(div) {
    queue.push(div);
    if (!busy) { next(); }
  }
  function start() {
    if (!("IntersectionObserver" in window)) { waiting.forEach(soon); return; }
    var near = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) {
          near.unobserve(entry.target);
          soon(entry.target);
        }
      });
    }, {rootMargin: MARGIN});
    waiting.forEach(function (div) { near.observe(div); });
  }
  window.addEventListener("beforeprint", function () {
    queue = [];
    waiting.forEach(function (div) { if (div.hasAttribute("data-figure")) { draw(div); } });
  });
  // after the next frame: the screen is drawn between two charts
  function later(step) { requestAnimationFrame(function () { setTimeout(step, 0); }); }
  if (document.readyState === "complete") { later(start); } else { window.addEventListener("load", function () { later(start); }); }
})();
