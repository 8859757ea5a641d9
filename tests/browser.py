"""Headless Chromium over the DevTools Protocol: open a page, collect errors, images, a screenshot.

    report = open_page(Path("site/index.html"), screenshot=tmp / "index.png")
    assert not report.errors and all(i["naturalWidth"] > 0 for i in report.images)

Chromium is the Debian package (`.ci/install-chromium.sh`); tests call `require_chromium()` to
skip with a clear reason when it is absent. The client is `websocket-client` (test extra).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Lazy images only load near the viewport: scroll through the page, then wait for every image
# to settle, so naturalWidth reports real success or failure rather than "not requested yet".
_SETTLE_IMAGES = """
(async () => {
  const step = Math.max(200, window.innerHeight / 2);
  for (let y = 0; y < document.documentElement.scrollHeight; y += step) {
    window.scrollTo(0, y);
    await new Promise(r => setTimeout(r, 30));
  }
  const imgs = Array.from(document.images);
  imgs.forEach(i => { if (!i.complete) i.loading = "eager"; });
  await Promise.all(imgs.map(i => i.complete ? null :
      new Promise(r => { i.addEventListener("load", r); i.addEventListener("error", r); setTimeout(r, 5000); })));
  window.scrollTo(0, 0);
  const out = imgs.map(i => ({src: i.getAttribute("src"), currentSrc: i.currentSrc, complete: i.complete,
                              naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
                              loading: i.getAttribute("loading"), tag: "img"}));
  // SVG <image> has no naturalWidth: decode its target in an Image to check it loads.
  for (const el of document.querySelectorAll("svg image")) {
    const href = el.getAttribute("href") || el.getAttribute("xlink:href");
    const probe = new Image();
    await new Promise(r => { probe.onload = r; probe.onerror = r; probe.src = new URL(href, document.baseURI).href;
                             setTimeout(r, 5000); });
    out.push({src: href, currentSrc: probe.src, complete: probe.complete, naturalWidth: probe.naturalWidth,
              naturalHeight: probe.naturalHeight, loading: null, tag: "svg:image"});
  }
  return out;
})()
"""


def find_chromium() -> Optional[str]:
    """Path of a Chromium/Chrome binary ($CHROMIUM first), or None."""
    env = os.environ.get("CHROMIUM")
    if env and shutil.which(env):
        return shutil.which(env)
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_chromium() -> str:
    """The Chromium path, or skip the calling test with the reason and the fix."""
    import pytest

    path = find_chromium()
    if path is None:
        pytest.skip("headless Chromium not installed (run .ci/install-chromium.sh or set $CHROMIUM)")
    try:
        import websocket  # noqa: F401
    except ImportError:
        pytest.skip("websocket-client not installed (pip install -e '.[test]')")
    return path


@dataclass
class PageReport:
    url: str
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    images: list[dict] = field(default_factory=list)  # src, naturalWidth, naturalHeight, complete
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    screenshot: Optional[Path] = None
    title: str = ""
    counts: dict = field(default_factory=dict)  # selector -> number of matching elements (open(counts=...))
    values: list = field(default_factory=list)  # results of open(steps=...), one per step

    @property
    def broken_images(self) -> list[dict]:
        return [i for i in self.images if not i["naturalWidth"]]


class Browser:
    """One headless Chromium process with a throwaway profile; use as a context manager."""

    def __init__(self, binary: Optional[str] = None, width: int = 1280, height: int = 900, timeout: float = 30.0):
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise RuntimeError("no Chromium binary found")
        self.width, self.height, self.timeout = width, height, timeout
        self.proc: Optional[subprocess.Popen] = None
        self.profile = ""

    def __enter__(self) -> "Browser":
        # a Chromium that has not opened its DevTools port in `timeout` seconds (seen once in CI
        # on a busy machine) is killed and started once more with a fresh profile
        try:
            return self._start()
        except TimeoutError:
            return self._start()

    def _start(self) -> "Browser":
        self.profile = tempfile.mkdtemp(prefix="vizsuite-chromium-")
        args = [self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--no-default-browser-check", "--mute-audio",
                f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "--remote-allow-origins=*",
                f"--window-size={self.width},{self.height}", "about:blank"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self.proc.returncode}")
            if port_file.is_file() and port_file.read_text().strip():
                self.port = int(port_file.read_text().splitlines()[0])
                return self
            time.sleep(0.05)
        self.__exit__()
        raise TimeoutError("chromium did not open its DevTools port")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _page_ws(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=self.timeout) as r:
            targets = json.load(r)
        pages = [t for t in targets if t.get("type") == "page"]
        if not pages:
            raise RuntimeError("chromium has no page target")
        return pages[0]["webSocketDebuggerUrl"]

    def open(self, target: str | Path, screenshot: Optional[str | Path] = None, counts=(), steps=()) -> PageReport:
        """Load a page (a path or URL), let lazy images load, report errors/images, screenshot.

        `steps` run after loading, in order, each result appended to `report.values`:
        ("eval", js) evaluates an expression (promises awaited); ("type", selector, text)
        focuses the element, clears it and types `text` as keyboard input (Input.insertText:
        real `input` events); ("wait", seconds) lets timers and events run."""
        import websocket

        url = Path(target).resolve().as_uri() if not str(target).startswith(("file:", "http:", "https:")) else str(target)
        report = PageReport(url)
        ws = websocket.create_connection(self._page_ws(), timeout=self.timeout, suppress_origin=True)
        ids = iter(range(1, 1_000_000))

        def on_event(msg: dict) -> None:
            method, params = msg.get("method"), msg.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                report.errors.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                             for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                d = params.get("exceptionDetails", {})
                report.errors.append("exception: " + (d.get("exception", {}).get("description") or d.get("text", "")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                e = params["entry"]
                report.errors.append(f"log: {e.get('text', '')} {e.get('url', '')}".strip())
            elif method == "Network.requestWillBeSent":
                report.requests.append(params.get("request", {}).get("url", ""))
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                report.errors.append(f"load failed: {params.get('errorText', '')}")

        def call(method: str, **params):
            my_id = next(ids)
            ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
            deadline = time.time() + self.timeout
            while time.time() < deadline:
                msg = json.loads(ws.recv())
                if msg.get("id") == my_id:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg.get("result", {})
                on_event(msg)
            raise TimeoutError(method)

        def wait_event(name: str) -> None:
            deadline = time.time() + self.timeout
            while time.time() < deadline:
                msg = json.loads(ws.recv())
                on_event(msg)
                if msg.get("method") == name:
                    return
            raise TimeoutError(name)

        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                call(f"{domain}.enable")
            call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                 deviceScaleFactor=1, mobile=False)
            call("Page.navigate", url=url)
            wait_event("Page.loadEventFired")
            result = call("Runtime.evaluate", expression=_SETTLE_IMAGES, awaitPromise=True, returnByValue=True)
            report.images = result.get("result", {}).get("value") or []
            report.title = call("Runtime.evaluate", expression="document.title", returnByValue=True)["result"]["value"]
            for selector in counts:
                expr = f"document.querySelectorAll({json.dumps(selector)}).length"
                report.counts[selector] = call("Runtime.evaluate", expression=expr, returnByValue=True)["result"]["value"]
            for step in steps:
                if step[0] == "eval":
                    r = call("Runtime.evaluate", expression=step[1], awaitPromise=True, returnByValue=True)
                    report.values.append(r.get("result", {}).get("value"))
                elif step[0] == "type":
                    sel = json.dumps(step[1])
                    call("Runtime.evaluate", expression=f"(e => {{ e.focus(); e.select && e.select(); }})"
                                                        f"(document.querySelector({sel}))")
                    call("Input.dispatchKeyEvent", type="keyDown", key="Backspace", code="Backspace",
                         windowsVirtualKeyCode=8)
                    call("Input.dispatchKeyEvent", type="keyUp", key="Backspace", code="Backspace",
                         windowsVirtualKeyCode=8)
                    call("Input.insertText", text=step[2])
                    r = call("Runtime.evaluate", expression=f"document.querySelector({sel}).value", returnByValue=True)
                    report.values.append(r.get("result", {}).get("value"))
                elif step[0] == "wait":
                    time.sleep(float(step[1]))
                    report.values.append(None)
                else:
                    raise ValueError(f"unknown step {step[0]!r}")
            # drain events that arrived while settling (late errors)
            ws.settimeout(0.2)
            try:
                while True:
                    on_event(json.loads(ws.recv()))
            except Exception:  # noqa: BLE001 - timeout ends the drain
                pass
            ws.settimeout(self.timeout)
            if screenshot is not None:
                shot = call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
                path = Path(screenshot)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(base64.b64decode(shot["data"]))
                report.screenshot = path
        finally:
            ws.close()
        return report


def open_page(target: str | Path, screenshot: Optional[str | Path] = None, counts=(), **kwargs) -> PageReport:
    """One-shot: start Chromium, open `target`, return its PageReport, stop Chromium."""
    with Browser(**kwargs) as browser:
        return browser.open(target, screenshot, counts=counts)
