/* Sort and filter for tables with class "sortable" (inline, no network): click a header to sort by
   that column (numbers by the cell's data-v value, text otherwise; click again to reverse); a text box
   with data-filter="TABLE_ID" hides the rows that do not contain every word typed. */
(function () {
  "use strict";
  // a cell's sort key: its data-v number, else its text; null when it holds no value (a failed cell's
  // "–", an empty cell, a data-v that is not a number), which sorts last in both directions
  function key(cell) {
    if (!cell) { return null; }
    var v = cell.getAttribute("data-v");
    if (v !== null) { return v !== "" && !isNaN(Number(v)) ? Number(v) : null; }
    var text = cell.textContent.trim().toLowerCase();
    return text === "" || text === "–" ? null : text;
  }
  function compare(a, b) {
    var an = typeof a === "number", bn = typeof b === "number";
    if (an && bn) { return a - b; }
    if (an) { return -1; }
    if (bn) { return 1; }
    return a < b ? -1 : a > b ? 1 : 0;
  }
  // each cell of a "stack" table names its column, for the one-block-per-row layout of a narrow screen
  document.querySelectorAll("table.stack").forEach(function (table) {
    var heads = table.tHead ? Array.prototype.map.call(table.tHead.rows[0].cells, function (th) {
      return th.textContent.trim();
    }) : [];
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      Array.prototype.forEach.call(row.cells, function (td, i) {
        if (heads[i] && td.colSpan === 1) { td.setAttribute("data-label", heads[i]); }
      });
    });
  });
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var body = table.tBodies[0];
    table.querySelectorAll("thead th").forEach(function (th, col) {
      th.classList.add("sort-key");
      th.setAttribute("tabindex", "0");
      function sort() {
        var up = th.getAttribute("aria-sort") !== "ascending";
        table.querySelectorAll("thead th").forEach(function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", up ? "ascending" : "descending");
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r1, r2) {
          var k1 = key(r1.cells[col]), k2 = key(r2.cells[col]);
          if (k1 === null || k2 === null) { return (k1 === null) - (k2 === null); }
          var c = compare(k1, k2);
          return up ? c : -c;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sort(); } });
    });
  });
  document.querySelectorAll("input[data-filter]").forEach(function (input) {
    var table = document.getElementById(input.getAttribute("data-filter"));
    if (!table) { return; }
    var counter = document.getElementById(input.getAttribute("data-filter") + "-count");
    input.addEventListener("input", function () {
      var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var text = row.textContent.toLowerCase();
        var keep = words.every(function (w) { return text.indexOf(w) >= 0; });
        row.hidden = !keep;
        if (keep) { shown += 1; }
      });
      if (counter) { counter.textContent = shown + " of " + table.tBodies[0].rows.length + " rows"; }
    });
  });
})();
