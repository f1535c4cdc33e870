"""Open a page in headless Chromium over the DevTools protocol, look at it, take a screenshot.

`--remote-debugging-pipe` talks JSON messages separated by NUL bytes on file
descriptors 3 (commands in) and 4 (replies out), so no websocket library and
no port are needed. Used by the browser test and by `scripts/report_screenshot.py`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                  "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio",
                  "--hide-scrollbars", "--remote-debugging-pipe")

# Runs in the page after load: every section's visibility, every chart's size, and
# text inside each chart drawn over other text (`overlaps`) or cut off at its edge (`clipped`).
INSPECT_JS = r"""
(() => {
  const vis = el => { const r = el.getBoundingClientRect(), s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.display !== 'none' && s.visibility !== 'hidden' && s.opacity !== '0'; };
  const sections = [...document.querySelectorAll('[data-section]')].map(el => ({
    key: el.dataset.section, visible: vis(el), height: el.getBoundingClientRect().height}));
  const charts = [...document.querySelectorAll('figure.chart')].map(fig => {
    const svg = fig.querySelector('svg'); const r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    const boxes = svg ? [...svg.querySelectorAll('text')].filter(t => t.textContent.trim())
      .map(t => t.getBoundingClientRect()) : [];
    let overlaps = 0;
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i], b = boxes[j];
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left),
        h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 2 && h > 2) overlaps++; }
    const outer = svg ? svg.getBoundingClientRect() : null;
    const clipped = boxes.filter(b => b.left < outer.left - 1 || b.right > outer.right + 1 ||
                                      b.top < outer.top - 1 || b.bottom > outer.bottom + 1).length;
    const marks = svg ? svg.querySelectorAll('rect,circle,polyline,path,line').length : 0;
    return {key: fig.dataset.chart, width: r.width, height: r.height, visible: vis(fig), overlaps, clipped, marks}; });
  return JSON.stringify({title: document.title, sections, charts,
                         width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight});
})()
"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
        if path:
            return path
    return None


class Chromium:
    """A headless Chromium driven over its DevTools pipe; use as a context manager."""

    def __init__(self, binary: str | None = None, *, timeout: float = 60.0):
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise FileNotFoundError("chromium not found (Debian: apt-get install chromium)")
        self.timeout = timeout
        self._id = 0
        self._buf = b""
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:  # noqa: PYI034 (not subclassed)
        self._profile = tempfile.TemporaryDirectory(prefix="edgekd-chromium-")
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        # Above 4, so that placing one end on fd 3 or 4 cannot overwrite the other.
        for name, fd in (("cmd_r", cmd_r), ("out_w", out_w)):
            high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(fd)
            cmd_r, out_w = (high, out_w) if name == "cmd_r" else (cmd_r, high)

        # bash puts the pipe ends on the fds Chromium expects (3: commands in, 4: replies out); dash cannot
        # (it takes single-digit fds only).
        shell = f'exec "$0" "$@" 3<&{cmd_r} 4>&{out_w}'
        argv = [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"]
        self.proc = subprocess.Popen(["bash", "-c", shell, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, pass_fds=(cmd_r, out_w))
        os.close(cmd_r)
        os.close(out_w)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):  # already gone: the kill below is enough
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._out_r):
            os.close(fd)
        self.stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        self._profile.cleanup()

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                tail = self.proc.stderr.read().decode(errors="replace")[-500:] if self.proc.poll() is not None else ""
                raise RuntimeError(f"chromium closed its DevTools pipe {tail}".strip())
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and wait for its reply; events that arrive meanwhile go to `events`."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            for e in self.events:
                if e.get("method") == method and e.get("sessionId") == session:
                    self.events.remove(e)
                    return e
            self.events.append(self._read_message(deadline))


def _console_errors(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions and failed loads (a missing resource is a Log error)."""
    out = []
    for e in events:
        p, m = e.get("params", {}), e.get("method")
        if m == "Runtime.exceptionThrown":
            out.append("exception: " + str(p.get("exceptionDetails", {}).get("text")))
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console.error: "
                       + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}".strip())
    return out


def inspect(html: Path, *, png: Path | None = None, width: int = 1280, clip_height: int | None = None,
            scale: float = 1.0, browser: Chromium | None = None) -> dict[str, Any]:
    """Load `html` in headless Chromium (a fresh one, or a tab of `browser`); return what INSPECT_JS
    found plus `console_errors`. With `png`, also write a screenshot (the top `clip_height` pixels if given)."""
    if browser is None:
        with Chromium() as chrome:
            return inspect(html, png=png, width=width, clip_height=clip_height, scale=scale, browser=chrome)
    chrome = browser
    target = chrome.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = chrome.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    try:
        for domain in ("Page", "Runtime", "Log"):
            chrome.send(f"{domain}.enable", session=session)
        chrome.send("Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
        chrome.send("Page.navigate", {"url": Path(html).resolve().as_uri()}, session=session)
        chrome.wait_event("Page.loadEventFired", session)
        found = json.loads(chrome.send("Runtime.evaluate", {"expression": INSPECT_JS, "returnByValue": True},
                                       session=session)["result"]["value"])
        if png is not None:
            height = min(found["height"], clip_height or found["height"])
            shot = chrome.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": scale}}, session=session)
            Path(png).write_bytes(base64.b64decode(shot["data"]))
        time.sleep(0.2)  # let late console events arrive before we stop listening
        chrome.send("Runtime.evaluate", {"expression": "1"}, session=session)
        found["console_errors"] = _console_errors([e for e in chrome.events if e.get("sessionId") == session])
    finally:
        chrome.events = [e for e in chrome.events if e.get("sessionId") != session]
        chrome.send("Target.closeTarget", {"targetId": target})
    return found
