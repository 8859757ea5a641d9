// vizsuite gallery: small progressive enhancements, no dependencies, safe from file://.
// Data comes embedded (a <script type="application/json"> on layer pages, search.js on the
// index): fetch() of local files fails on file://. Text goes in through textContent only.
(function () {
  "use strict";
  // Left/right arrow keys follow the page's prev/next links.
  document.addEventListener("keydown", function (ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
    var tag = (ev.target && ev.target.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") return;
    if (ev.key === "Escape") { closeLightbox(); return; }
    var rel = ev.key === "ArrowLeft" ? "prev" : ev.key === "ArrowRight" ? "next" : null;
    if (!rel) return;
    var link = document.querySelector('a[rel="' + rel + '"]');
    if (link) window.location.href = link.href;
  });
  // A broken image becomes a visible placeholder instead of an empty box.
  document.addEventListener("error", function (ev) {
    var el = ev.target;
    if (el && el.tagName === "IMG" && !el.dataset.failed) {
      el.dataset.failed = "1";
      el.classList.add("missing");
      el.alt = el.alt || "image missing";
    }
  }, true);

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function terms(q) { return q.toLowerCase().split(/\s+/).filter(Boolean); }
  function matches(hay, ts) { for (var i = 0; i < ts.length; i++) if (hay.indexOf(ts[i]) < 0) return false; return true; }
  function fmt(v) { return v === null || v === undefined ? "" : Math.abs(v) >= 1000 || (v !== 0 && Math.abs(v) < 0.001) ? v.toExponential(2) : String(Number(v.toPrecision(3))); }

  // ---- layer page: the unit grid, sorted and filtered client-side
  function initGrid() {
    var blob = document.getElementById("unit-data"), grid = document.getElementById("unit-grid");
    if (!blob || !grid) return;
    var units = JSON.parse(blob.textContent), frag = document.createDocumentFragment();
    units.forEach(function (u) {
      var card = el("figure", "card"), inner = u.h ? el("a") : el("div");
      if (u.h) inner.href = u.h;
      if (u.t) {
        var img = el("img");
        img.loading = "lazy"; img.decoding = "async"; img.src = u.t; img.alt = "unit " + u.u;
        img.width = 96; img.height = 96;
        inner.appendChild(img);
      } else inner.appendChild(el("div", "slot", "unit " + u.u));
      var cap = el("figcaption");
      cap.appendChild(el("span", "idx", String(u.u)));
      if (u.p && u.p !== u.d) cap.appendChild(el("span", "idx", " · " + u.p));
      if (u.d) cap.appendChild(el("span", "desc", " · " + u.d));
      var stats = [];
      if (u.m !== null) stats.push("mean " + fmt(u.m));
      if (u.s !== null) stats.push("sel " + fmt(u.s));
      if (stats.length) cap.appendChild(el("span", "stats", stats.join(" · ")));
      if (u.c && u.c.length) cap.title = u.c.join(", ");
      inner.appendChild(cap);
      card.appendChild(inner);
      card.dataset.unit = u.u;
      u.el = card;
      u.hay = [u.d || ""].concat(u.c || [], u.k || []).join(" ").toLowerCase();
      frag.appendChild(card);
    });
    grid.appendChild(frag);
    var sort = document.getElementById("unit-sort"), filter = document.getElementById("unit-filter"),
        count = document.getElementById("unit-count");
    var sorted = "listed";
    function apply() {
      var key = sort ? sort.value : "listed", ts = terms(filter ? filter.value : ""), shown = 0;
      if (key !== sorted) {  // re-order the cards only when the sort changes (a keystroke just hides)
        var field = key === "mean" ? "m" : key === "selectivity" ? "s" : null;
        var order = units.slice();  // "listed": the page's own order (e.g. features by frequency)
        if (key === "index") order.sort(function (a, b) { return a.u - b.u; });
        if (field) order.sort(function (a, b) {  // unknown values last, ties by index
          var x = a[field], y = b[field];
          if (x === null && y === null) return a.u - b.u;
          if (x === null) return 1;
          if (y === null) return -1;
          return y - x || a.u - b.u;
        });
        var frag = document.createDocumentFragment();
        order.forEach(function (u) { frag.appendChild(u.el); });
        grid.appendChild(frag);
        sorted = key;
      }
      units.forEach(function (u) {
        var ok = !ts.length || matches(u.hay, ts);
        if (u.el.hidden === ok) u.el.hidden = !ok;
        if (ok) shown++;
      });
      if (count) count.textContent = shown + " of " + units.length + " units";
    }
    if (sort) sort.addEventListener("change", apply);
    if (filter) filter.addEventListener("input", apply);
    apply();
    document.body.dataset.ready = "1";
    if (window.performance && performance.mark) performance.mark("vizsuite-grid-ready");
  }

  // ---- index: search over every built unit (search.js sets window.VIZSUITE_SEARCH)
  function initSearch() {
    var box = document.getElementById("unit-search"), list = document.getElementById("search-results");
    var data = window.VIZSUITE_SEARCH, status = document.getElementById("search-status");
    if (!box || !list || !data) return;
    var units = data.units;
    units.forEach(function (u) {
      u.hay = [u.l + ":" + u.u, u.d || ""].concat(u.c || [], u.k || []).join(" ").toLowerCase();
    });
    function run() {
      var ts = terms(box.value);
      list.textContent = "";
      if (!ts.length) { status.textContent = units.length + " units searchable"; return; }
      var hits = units.filter(function (u) { return matches(u.hay, ts); });
      hits.sort(function (a, b) { return (b.s === null ? -Infinity : b.s) - (a.s === null ? -Infinity : a.s); });
      status.textContent = hits.length + " of " + units.length + " units match";
      hits.slice(0, 60).forEach(function (u) {
        var li = el("li", "hit"), a = el("a");
        a.href = u.h;
        if (u.t) { var img = el("img"); img.loading = "lazy"; img.src = u.t; img.alt = ""; img.width = 40; img.height = 40; a.appendChild(img); }
        a.appendChild(el("code", null, u.l + ":" + u.u));
        li.appendChild(a);
        var extra = [u.d].concat(u.c || [], u.k || []).filter(Boolean).join(" · ");
        if (extra) li.appendChild(el("span", "muted", " " + extra));
        list.appendChild(li);
      });
    }
    box.addEventListener("input", run);
    run();
  }

  // ---- neuron page: a dataset example opens the whole image with the receptive-field box
  var lightbox = null;
  function closeLightbox() { if (lightbox) { lightbox.remove(); lightbox = null; } }
  function openLightbox(link) {
    closeLightbox();
    lightbox = el("div", "lightbox");
    var frame = el("div", "frame"), img = el("img");
    img.src = link.getAttribute("href"); img.alt = "whole image";
    frame.appendChild(img);
    var box = (link.dataset.box || "").split(",").map(Number);
    if (box.length === 3 && box.every(isFinite)) {
      var rf = el("div", "rf");
      rf.style.top = (100 * box[0]) + "%"; rf.style.left = (100 * box[1]) + "%";
      rf.style.width = rf.style.height = (100 * box[2]) + "%";
      frame.appendChild(rf);
    }
    lightbox.appendChild(frame);
    lightbox.appendChild(el("p", null, (link.dataset.caption || "") + " (the box: the receptive field of the strongest position; click to close)"));
    lightbox.addEventListener("click", closeLightbox);
    document.body.appendChild(lightbox);
  }
  document.addEventListener("click", function (ev) {
    var link = ev.target && ev.target.closest && ev.target.closest("a.ex-open");
    if (!link || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
    ev.preventDefault();
    openLightbox(link);
  });

  // ---- layer page: scroll the small model graph to the highlighted layer
  function centreGraph() {
    var box = document.querySelector(".graph-mini"), here = box && box.querySelector("g.here rect");
    if (!here) return;
    var r = here.getBoundingClientRect(), b = box.getBoundingClientRect();
    box.scrollTop += r.top - b.top - box.clientHeight / 2 + r.height / 2;
  }

  document.addEventListener("DOMContentLoaded", function () { initGrid(); initSearch(); centreGraph(); });
})();
