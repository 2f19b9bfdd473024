"""Debian's chromium, headless, driven over the DevTools protocol on a pipe (--remote-debugging-pipe).

Chromium reads protocol commands from file descriptor 3 and writes answers and events to
descriptor 4, each a JSON message ended by a NUL byte. `open_page` loads one page in a fresh
profile with networking features off, and returns what a reviewer's browser would show:
console errors (console.error/assert, uncaught exceptions, and the browser's own error log:
failed loads, Content-Security-Policy refusals), the requests the page made, values the page
computes, and a screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--remote-debugging-pipe", "--window-size=1280,900",
)  # fmt: skip


@dataclass
class Page:
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    value: object = None
    screenshot: bytes = b""


class _Pipe:
    def __init__(self, process: subprocess.Popen, to_browser: int, from_browser: int):
        self.process = process
        self.to_browser = to_browser
        self.from_browser = from_browser
        self.events: queue.Queue = queue.Queue()
        self.answers: dict[int, dict] = {}
        self.arrived = threading.Condition()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while True:
            data = os.read(self.from_browser, 1 << 16)
            if not data:
                break
            buffer += data
            while b"\0" in buffer:
                message, buffer = buffer.split(b"\0", 1)
                document = json.loads(message)
                if "id" in document:
                    with self.arrived:
                        self.answers[document["id"]] = document
                        self.arrived.notify_all()
                else:
                    self.events.put(document)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self.arrived:
            while self.next_id not in self.answers:
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise TimeoutError(f"chromium did not answer {method}")
                self.arrived.wait(left)
            answer = self.answers.pop(self.next_id)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def open_page(path: Path, expression: str = "null", timeout: float = 60) -> Page:
    """Load `path` (a local file) in headless chromium; errors, requests, `expression`'s value and a full-page PNG."""
    binary = chromium()
    if binary is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium; make deps installs it)")
    profile = Path(tempfile.mkdtemp(prefix="airlock-chromium-"))
    to_read, to_write = os.pipe()  # we write commands, chromium reads them on fd 3
    from_read, from_write = os.pipe()  # chromium writes on fd 4, we read

    def plumb() -> None:
        # Copies first (either end may already sit on 3 or 4), then onto 3 and 4, open across exec.
        reading, writing = os.dup(to_read), os.dup(from_write)
        os.dup2(reading, 3)
        os.dup2(writing, 4)
        os.set_inheritable(3, True)
        os.set_inheritable(4, True)

    process = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=plumb, close_fds=False,
    )  # fmt: skip
    os.close(to_read)
    os.close(from_write)
    pipe = _Pipe(process, to_write, from_read)
    page = Page()
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            pipe.call(f"{domain}.enable", session=session)
        pipe.call("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        deadline = time.monotonic() + timeout
        loaded = False
        while time.monotonic() < deadline:
            try:
                event = pipe.events.get(timeout=0.5)
            except queue.Empty:
                if loaded:
                    break  # loaded, and nothing more happened for half a second
                continue
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Page.loadEventFired":
                loaded = True
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                page.errors.append("console." + params["type"] + ": " + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                page.errors.append("uncaught: " + str(details.get("exception", {}).get("description") or details.get("text")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                page.errors.append("log: " + params["entry"].get("text", ""))
            elif method == "Network.requestWillBeSent":
                page.requests.append(params.get("request", {}).get("url", ""))
        if not loaded:
            raise TimeoutError(f"chromium did not finish loading {path} in {timeout}s")
        page.value = pipe.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session).get("result", {}).get("value")
        shot = pipe.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session, timeout=60)
        page.screenshot = base64.b64decode(shot["data"])
        try:
            pipe.call("Browser.close", timeout=10)
        except (TimeoutError, RuntimeError):
            pass
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.close(to_write)
        os.close(from_read)
        shutil.rmtree(profile, ignore_errors=True)
    return page
