// vizsuite gallery: small progressive enhancements, no dependencies, safe from file://.
(function () {
  "use strict";
  // Left/right arrow keys follow the page's prev/next links.
  document.addEventListener("keydown", function (ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
    var tag = (ev.target && ev.target.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA") return;
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
})();
