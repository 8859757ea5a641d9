"""Benchmark: a 1,000-unit layer page in headless Chromium: load until the grid is interactive
(cards rendered from the embedded data, sort/filter handlers attached), one filter keystroke
and one re-sort; page weight.

    python benchmarks/site.py [--units 1000] [--runs 5]

The page data is synthesized (no rendering): an InceptionV1 `mixed4d`-sized layer (the real
layer has 528 channels; the issue asks for 1,000 units) with one-line descriptions, classes,
mean activations and selectivities, 64 px placeholder thumbnails written straight from arrays,
and InceptionV1's traced graph (random weights) on the page. Chromium is the same headless
binary the tests use (tests/browser.py). Writes benchmarks/results/site.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ["dog snout", "striped texture", "car wheel", "round eye", "curve detector", "high-low frequency",
         "fur", "text", "sky edge", "bird wing"]


def synth_site(site: Path, units: int) -> dict:
    from vizsuite.analysis.graph import model_graph
    from vizsuite.gallery.pages import Img, LayerPage, LayerSummary, ModelInfo, SiteData, UnitCard
    from vizsuite.gallery.site import write_site
    from vizsuite.zoo import load_model

    graph = model_graph(load_model("inceptionv1", random_weights=True))
    rng = np.random.default_rng(0)
    cards = []
    for u in range(units):
        rel = f"assets/mixed4d/{u}.png"
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        base = rng.random(3) * 255
        arr = np.clip(base + rng.normal(0, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(site / rel, optimize=True)
        cards.append(UnitCard(u, Img(rel, width=64, height=64), description=f"{WORDS[u % 10]} {u % 7}",
                              mean_activation=float(rng.normal()), selectivity=float(rng.gamma(2.0)),
                              top_classes=[f"class {int(c)}" for c in rng.integers(0, 1000, 3)]))
    layers = [LayerSummary(n.name, n.type, n.shape, n.channels, False, n.receptive_field) for n in graph.layers()]
    data = SiteData(ModelInfo("inceptionv1", layers, input_size=224, graph=graph),
                    [LayerPage("mixed4d", cards)])
    write_site(data, site)
    page = site / "layers" / "mixed4d.html"
    text = page.read_text("utf-8")
    blob = text.split('id="unit-data">', 1)[1].split("</script>", 1)[0]
    thumbs = sum((site / c.thumb.src).stat().st_size for c in cards)
    static = sum((site / "static" / n).stat().st_size for n in ("site.js", "site.css"))
    return {"page": page, "html": len(text.encode()), "data": len(blob.encode()), "thumbs": thumbs,
            "static": static, "thumb_avg": thumbs / units}


TIMING = """(() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const ready = performance.getEntriesByName("vizsuite-grid-ready")[0];
  return {ready: ready ? ready.startTime : null, dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd,
          cards: document.querySelectorAll("#unit-grid .card").length,
          first_view: Array.from(document.querySelectorAll("#unit-grid img"))
                       .filter(i => i.getBoundingClientRect().top < innerHeight).length};
})()"""
FILTER = """(() => {
  const f = document.getElementById("unit-filter"), t0 = performance.now();
  f.value = "striped"; f.dispatchEvent(new Event("input"));
  const shown = Array.from(document.querySelectorAll("#unit-grid .card")).filter(c => !c.hidden).length;
  const t1 = performance.now();
  const s = document.getElementById("unit-sort"); s.value = "selectivity"; s.dispatchEvent(new Event("change"));
  return {filter_ms: t1 - t0, sort_ms: performance.now() - t1, shown};
})()"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "site.md"))
    args = ap.parse_args()
    from tests.browser import Browser, find_chromium

    if find_chromium() is None:
        sys.exit("headless Chromium not found (set $CHROMIUM)")
    with tempfile.TemporaryDirectory() as tmp:
        info = synth_site(Path(tmp) / "site", args.units)
        runs = []
        with Browser() as browser:
            for _ in range(args.runs + 1):  # the first run warms the browser's caches: dropped
                r = browser.open(info["page"], steps=[("eval", TIMING), ("eval", FILTER)])
                if r.errors:
                    sys.exit(f"page errors: {r.errors}")
                runs.append({**r.values[0], **r.values[1]})
        runs = runs[1:]
    med = {k: statistics.median(r[k] for r in runs) for k in ("ready", "dcl", "load", "filter_ms", "sort_ms", "first_view")}
    kib = lambda b: f"{b / 1024:.0f} KiB"  # noqa: E731
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Site benchmark: a 1,000-unit layer page in headless Chromium", "",
        f"{args.units} synthesized unit cards (InceptionV1 `mixed4d`-sized layer, random-weight graph), "
        f"64 px placeholder thumbnails; median of {args.runs} loads after one warm-up, from file://; "
        f"{os.cpu_count()} cores, {platform.machine()}, load average {load:.1f} (other helpers' jobs share the machine).",
        "",
        "| measure | value |", "|---|---|",
        f"| grid interactive (cards rendered, handlers attached) | **{med['ready']:.0f} ms** |",
        f"| DOMContentLoaded | {med['dcl']:.0f} ms |",
        f"| load event | {med['load']:.0f} ms |",
        f"| filter keystroke ('striped', {runs[0]['shown']} of {runs[0]['cards']} shown) | {med['filter_ms']:.1f} ms |",
        f"| re-sort by selectivity | {med['sort_ms']:.1f} ms |",
        f"| thumbnails in the first viewport (the rest load lazily on scroll) | {med['first_view']:.0f} of {args.units} |",
        "", "Page weight:", "",
        "| part | size |", "|---|---|",
        f"| HTML (graph SVG and unit data included) | {kib(info['html'])} |",
        f"| of which the embedded unit data | {kib(info['data'])} |",
        f"| site.js + site.css | {kib(info['static'])} |",
        f"| all {args.units} thumbnails (loaded lazily as they scroll into view) | {kib(info['thumbs'])} "
        f"({info['thumb_avg']:.0f} B each) |",
        f"| first view (HTML + static + {med['first_view']:.0f} thumbnails) | "
        f"{kib(info['html'] + info['static'] + med['first_view'] * info['thumb_avg'])} |",
        "", "Times are the page's own performance marks of each fresh load (site.js marks `vizsuite-grid-ready` "
        "once the cards are in the DOM and the handlers attached); the filter and sort times are one "
        "synchronous event each, measured inside the page.",
        "", "Runs (ms to interactive): " + ", ".join(f"{r['ready']:.0f}" for r in runs) + ".", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
