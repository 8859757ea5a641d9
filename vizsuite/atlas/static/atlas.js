/* vizsuite atlas + building-blocks pages: zoom/pan viewport and hover/click details.
   No dependencies, no network: the data sits in <script type="application/json"> in the page,
   so everything works from file://. */
(function () {
  "use strict";

  function readData(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }

  /* A viewport whose single child (the stage) is scaled and translated by wheel and drag. */
  function ZoomPan(viewport, stage, size) {
    var s = 1, tx = 0, ty = 0, drag = null, moved = false;
    function apply() {
      stage.style.transform = "translate(" + tx + "px," + ty + "px) scale(" + s + ")";
    }
    function fit() {
      var r = viewport.getBoundingClientRect();
      s = Math.min(r.width / size.w, r.height / size.h) || 1;
      tx = (r.width - size.w * s) / 2; ty = (r.height - size.h * s) / 2;
      apply();
    }
    function zoomAt(factor, cx, cy) {
      var ns = Math.max(0.1, Math.min(40, s * factor));
      tx = cx - (cx - tx) * ns / s; ty = cy - (cy - ty) * ns / s; s = ns;
      apply();
    }
    viewport.addEventListener("wheel", function (e) {
      e.preventDefault();
      var r = viewport.getBoundingClientRect();
      zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
    }, {passive: false});
    viewport.addEventListener("pointerdown", function (e) {
      drag = {x: e.clientX, y: e.clientY, tx: tx, ty: ty}; moved = false;
    });
    window.addEventListener("pointermove", function (e) {
      if (!drag) return;
      var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) moved = true;
      tx = drag.tx + dx; ty = drag.ty + dy; apply();
    });
    window.addEventListener("pointerup", function () { drag = null; });
    var api = {
      fit: fit,
      zoomIn: function () { var r = viewport.getBoundingClientRect(); zoomAt(1.25, r.width / 2, r.height / 2); },
      zoomOut: function () { var r = viewport.getBoundingClientRect(); zoomAt(0.8, r.width / 2, r.height / 2); },
      wasDrag: function () { return moved; }
    };
    window.addEventListener("resize", fit);
    fit();
    return api;
  }

  function bindControls(zp) {
    var map = {"zoom-in": zp.zoomIn, "zoom-out": zp.zoomOut, "zoom-fit": zp.fit};
    Object.keys(map).forEach(function (id) {
      var b = document.getElementById(id);
      if (b) b.addEventListener("click", map[id]);
    });
  }

  function classList(classes) {
    return "<ol class='classes'>" + classes.map(function (c) {
      return "<li><span class='label'>" + esc(c.label) + "</span> <span class='num'>+" +
        c.logit_gain.toFixed(2) + "</span></li>";
    }).join("") + "</ol>";
  }

  /* ---------------------------------------------------------------- activation atlas */
  function atlasPage(data) {
    var viewport = document.getElementById("viewport"), stage = document.getElementById("stage");
    var info = document.getElementById("info"), pinned = null;
    var px = data.cell_px, n = data.grid;
    stage.style.width = n * px + "px"; stage.style.height = n * px + "px";
    var byId = {};
    data.cells.forEach(function (c) {
      var img = document.createElement("img");
      img.src = c.file; img.alt = "cell " + c.row + "," + c.col;
      img.className = "icon"; img.dataset.cell = c.id; img.draggable = false;
      img.style.left = c.col * px + "px"; img.style.top = c.row * px + "px";
      img.style.width = px + "px"; img.style.height = px + "px";
      stage.appendChild(img);
      byId[c.id] = {cell: c, img: img};
    });
    function show(c) {
      info.innerHTML = "<h3>cell " + c.row + ", " + c.col + "</h3>" +
        "<p><span class='count'>" + c.count + "</span> samples</p>" +
        "<img class='big' src='" + esc(c.file) + "' alt='icon'>" +
        "<h4>supports</h4>" + classList(c.classes) +
        "<h4>source patches</h4><img class='patches' src='" + esc(c.patches) + "' alt='patches'>";
      info.dataset.cell = c.id;
    }
    stage.addEventListener("mouseover", function (e) {
      var id = e.target.dataset && e.target.dataset.cell;
      if (id && !pinned) show(byId[id].cell);
    });
    stage.addEventListener("click", function (e) {
      var id = e.target.dataset && e.target.dataset.cell;
      if (!id || zp.wasDrag()) return;
      if (pinned) pinned.img.classList.remove("pinned");
      pinned = pinned && pinned.cell.id === id ? null : byId[id];
      if (pinned) { pinned.img.classList.add("pinned"); show(pinned.cell); }
    });
    var zp = ZoomPan(viewport, stage, {w: n * px, h: n * px});
    bindControls(zp);
    window.vizsuiteAtlas = {data: data, show: function (id) { show(byId[id].cell); }};
  }

  /* ---------------------------------------------------------------- building blocks */
  function explainPage(data) {
    var viewport = document.getElementById("viewport"), stage = document.getElementById("stage");
    var info = document.getElementById("info"), pinned = null;
    var size = data.image_px, h = data.grid[0], w = data.grid[1];
    stage.style.width = size + "px"; stage.style.height = size + "px";
    var cells = {};
    data.positions.forEach(function (p) {
      var d = document.createElement("div");
      d.className = "pos"; d.dataset.pos = p.id;
      d.style.left = p.x * size / w + "px"; d.style.top = p.y * size / h + "px";
      d.style.width = size / w + "px"; d.style.height = size / h + "px";
      stage.appendChild(d);
      cells[p.id] = {pos: p, el: d};
    });
    var units = {};
    data.units.forEach(function (u) { units[u.unit] = u; });
    function show(p) {
      info.innerHTML = "<h3>position " + p.y + ", " + p.x + "</h3>" +
        "<p>attribution to <b>" + esc(data.target.label) + "</b>: <span class='num'>" +
        p.attribution.toFixed(3) + "</span></p><ul class='units'>" + p.units.map(function (t) {
          var u = units[t.unit];
          return "<li>" + (u && u.file ? "<img src='" + esc(u.file) + "' alt='unit " + t.unit + "'>" : "") +
            "<span>" + esc(data.layer) + ":" + t.unit + "</span> <span class='num'>" +
            t.activation.toFixed(2) + "</span></li>";
        }).join("") + "</ul>";
      info.dataset.pos = p.id;
    }
    stage.addEventListener("mouseover", function (e) {
      var id = e.target.dataset && e.target.dataset.pos;
      if (id && !pinned) show(cells[id].pos);
    });
    stage.addEventListener("click", function (e) {
      var id = e.target.dataset && e.target.dataset.pos;
      if (!id || zp.wasDrag()) return;
      if (pinned) pinned.el.classList.remove("pinned");
      pinned = pinned && pinned.pos.id === id ? null : cells[id];
      if (pinned) { pinned.el.classList.add("pinned"); show(pinned.pos); }
    });
    var toggle = document.getElementById("toggle-heat");
    if (toggle) toggle.addEventListener("change", function () {
      document.getElementById("heat").style.display = toggle.checked ? "" : "none";
    });
    var zp = ZoomPan(viewport, stage, {w: size, h: size});
    bindControls(zp);
    window.vizsuiteExplain = {data: data, show: function (id) { show(cells[id].pos); }};
  }

  function start() {
    var a = readData("atlas-data");
    if (a) atlasPage(a);
    var b = readData("explain-data");
    if (b) explainPage(b);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
