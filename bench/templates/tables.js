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
/* Tables drawn from a data block (class "datatable", data-rows="ID of the block"): the block holds
   {"page": N, "titles": [...], "rows": [[row class, cell, ...], ...]} as JSON, or deflated and base64-encoded
   (type application/x-deflate-base64) for a large table. A cell is its HTML (its sort key is its text), or
   [html, key] or [html, key, index of its title]. N rows are drawn at a time, with a pager, once the table
   comes near the screen (until then the table is aria-busy). Sorting (a click
   on a header) and the filter (data-filter="TABLE_ID") work on every row, with the same rules as above:
   numbers as numbers, text as text, cells without a value (key null) last either way. */
(function () {
  "use strict";
  function plain(html) {
    return html.replace(/<[^>]*>/g, "").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&#34;|&quot;/g, '"')
      .replace(/&#39;/g, "'").replace(/&amp;/g, "&");
  }
  function html(cell) { return typeof cell === "string" ? cell : cell[0]; }
  function key(cell) {
    if (typeof cell !== "string") { return cell[1]; }
    var text = plain(cell).trim().toLowerCase();
    return text === "" || text === "–" ? null : text;
  }
  function inflate(block) {
    var text = atob(block.textContent.trim()), bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i += 1) { bytes[i] = text.charCodeAt(i); }
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).text().then(JSON.parse);
  }
  function setUp(table, data) {
    var rows = data.rows, size = data.page || 500, titles = data.titles || [];
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var css = heads.map(function (th) { return th.getAttribute("data-td") || ""; });
    var numeric = heads.map(function (_, col) {
      return rows.some(function (r) { return typeof key(r[col + 1]) === "number"; });
    });
    var texts = null, shown = rows, first = 0;
    var pager = document.getElementById(table.id + "-pager");
    var counter = document.getElementById(table.id + "-count");
    function draw() {
      var body = document.createElement("tbody");
      shown.slice(first, first + size).forEach(function (r) {
        var tr = document.createElement("tr");
        if (r[0]) { tr.className = r[0]; }
        for (var col = 0; col < heads.length; col += 1) {
          var td = document.createElement("td"), cell = r[col + 1];
          td.innerHTML = html(cell);
          if (css[col]) { td.className = css[col]; }
          if (typeof cell !== "string" && cell.length > 2) { td.title = titles[cell[2]]; }
          if (numeric[col]) { var k = key(cell); td.setAttribute("data-v", k === null ? "" : String(k)); }
          tr.appendChild(td);
        }
        body.appendChild(tr);
      });
      table.replaceChild(body, table.tBodies[0]);
      table.removeAttribute("aria-busy");
      if (pager) {
        pager.hidden = shown.length <= size;
        pager.querySelector("span").textContent = "rows " + (shown.length ? first + 1 : 0) + "–" +
          Math.min(first + size, shown.length) + " of " + shown.length;
      }
    }
    heads.forEach(function (th, col) {
      th.classList.add("sort-key");
      th.setAttribute("tabindex", "0");
      function sort() {
        var up = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", up ? "ascending" : "descending");
        var keys = new Map();
        rows.forEach(function (r) { keys.set(r, key(r[col + 1])); });
        function order(r1, r2) {
          var k1 = keys.get(r1), k2 = keys.get(r2);
          if (k1 === null || k2 === null) { return (k1 === null) - (k2 === null); }
          var n1 = typeof k1 === "number", n2 = typeof k2 === "number";
          var c = n1 && n2 ? k1 - k2 : n1 ? -1 : n2 ? 1 : k1 < k2 ? -1 : k1 > k2 ? 1 : 0;
          return up ? c : -c;
        }
        rows.sort(order);
        shown = shown === rows ? rows : shown.slice().sort(order);
        first = 0;
        draw();
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sort(); } });
    });
    var input = document.querySelector('input[data-filter="' + table.id + '"]');
    if (input) {
      input.addEventListener("input", function () {
        var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
        if (!texts) {
          texts = new Map();
          rows.forEach(function (r) {
            texts.set(r, r.slice(1).map(function (c) { return plain(html(c)); }).join(" ").toLowerCase());
          });
        }
        shown = words.length ? rows.filter(function (r) {
          var text = texts.get(r);
          return words.every(function (w) { return text.indexOf(w) >= 0; });
        }) : rows;
        first = 0;
        draw();
        if (counter) { counter.textContent = shown.length + " of " + rows.length + " rows"; }
      });
    }
    if (pager) {
      pager.querySelectorAll("button").forEach(function (button) {
        button.addEventListener("click", function () {
          var step = Number(button.getAttribute("data-step")) * size;
          first = Math.max(0, Math.min(first + step, Math.floor((shown.length - 1) / size) * size));
          draw();
        });
      });
    }
    draw();
  }
  // a table's block is read and its rows drawn when it comes near the screen (lazy.js), never before the
  // first screen is drawn
  lazy.near(document.querySelectorAll("table.datatable"), function (table) {
    var block = document.getElementById(table.getAttribute("data-rows"));
    if (!block) { return; }
    if (block.type === "application/x-deflate-base64") {
      inflate(block).then(function (data) { setUp(table, data); });
    } else {
      setUp(table, JSON.parse(block.textContent));
    }
  });
})();
