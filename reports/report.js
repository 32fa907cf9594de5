// Progressive enhancement only: the report reads fully without this script.
// Captured text reaches the page through textContent and the JSON block,
// never through innerHTML or string-built markup.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);

  function openAncestors(el) {
    for (var e = el; e; e = e.parentElement) {
      if (e.tagName === "DETAILS") { e.open = true; }
    }
  }

  function reveal(id) {
    var el = id ? document.getElementById(id) : null;
    if (!el) { return; }
    openAncestors(el);
    el.scrollIntoView({ block: "center" });
    el.classList.add("flash");
    window.setTimeout(function () { el.classList.remove("flash"); }, 1500);
  }

  function button(label, action) {
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.addEventListener("click", action);
    return b;
  }

  function setAll(root, selector, open) {
    root.querySelectorAll(selector).forEach(function (d) { d.open = open; });
  }

  function treeToolbar(incident) {
    var section = document.getElementById(incident.id);
    var tree = section ? section.querySelector("ul.tree") : null;
    if (!tree) { return; }
    var bar = document.createElement("div");
    bar.className = "toolbar";
    bar.appendChild(button("Expand all", function () { setAll(tree, "li.node > details", true); }));
    bar.appendChild(button("Collapse all", function () { setAll(tree, "li.node > details", false); }));
    bar.appendChild(button("Focus only", function () {
      setAll(tree, "li.node > details", false);
      tree.querySelectorAll("li.node.focus").forEach(function (li) { openAncestors(li.parentElement); });
    }));
    var search = document.createElement("input");
    search.type = "search";
    search.placeholder = "find process: name, pid, cmdline";
    var count = document.createElement("span");
    count.className = "muted";
    search.addEventListener("input", function () {
      var q = search.value.trim().toLowerCase();
      var hits = 0;
      tree.querySelectorAll("li.node.match").forEach(function (li) { li.classList.remove("match"); });
      if (q) {
        incident.nodes.forEach(function (node) {
          var hay = (node.pid + " " + node.name + " " + node.cmdline).toLowerCase();
          if (hay.indexOf(q) < 0) { return; }
          var li = document.getElementById(node.id);
          if (!li) { return; }
          li.classList.add("match");
          openAncestors(li.parentElement);
          hits += 1;
        });
      }
      count.textContent = q ? hits + " found" : "";
    });
    bar.appendChild(search);
    bar.appendChild(count);
    tree.parentNode.insertBefore(bar, tree);
  }

  function timelineFilter(table) {
    var rows = table.querySelectorAll("tbody tr");
    var cats = [];
    rows.forEach(function (tr) {
      var c = tr.getAttribute("data-cat");
      if (cats.indexOf(c) < 0) { cats.push(c); }
    });
    if (cats.length < 2) { return; }
    var shown = {};
    var bar = document.createElement("div");
    bar.className = "toolbar";
    cats.sort().forEach(function (c) {
      shown[c] = true;
      var label = document.createElement("label");
      var box = document.createElement("input");
      box.type = "checkbox";
      box.checked = true;
      box.addEventListener("change", function () {
        shown[c] = box.checked;
        rows.forEach(function (tr) { tr.hidden = !shown[tr.getAttribute("data-cat")]; });
      });
      label.appendChild(box);
      label.appendChild(document.createTextNode(" " + c));
      bar.appendChild(label);
    });
    table.parentNode.insertBefore(bar, table);
  }

  data.incidents.forEach(treeToolbar);
  document.querySelectorAll("table.timeline").forEach(timelineFilter);

  window.addEventListener("hashchange", function () { reveal(window.location.hash.slice(1)); });
  if (window.location.hash) { reveal(window.location.hash.slice(1)); }

  // Print everything, then give the reader back the page as it was.
  var closedBeforePrint = [];
  window.addEventListener("beforeprint", function () {
    closedBeforePrint = Array.prototype.filter.call(document.querySelectorAll("details"), function (d) { return !d.open; });
    closedBeforePrint.forEach(function (d) { d.open = true; });
  });
  window.addEventListener("afterprint", function () {
    closedBeforePrint.forEach(function (d) { d.open = false; });
    closedBeforePrint = [];
  });
})();
