"""Look at the built book the way a reader does: every page in headless Chromium.

`python -m percept.cli.browse BOOK_HTML_DIR [--shots DIR]` opens each page of a Jupyter Book build
and reports what a reader would trip over: a script error (an uncaught exception, or an error the
page or a failed resource logs to the console), a figure that did not load or is empty, an error
output cell (a traceback shown in the page). It writes one full-page screenshot per page for a
person to look at. Needs Debian's `chromium` (or Google Chrome) on PATH.

The browser is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON
messages separated by NUL bytes on file descriptors 3 and 4), so nothing beyond the standard
library is needed and the console's levels are read exactly, not guessed from log text.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from percept.errors import PerceptError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Console errors that are not the page's: the pydata theme logs this one with console.error when
# the browser has no stored light/dark choice yet (every fresh profile), then picks "auto".
THEME_NOISE = ("Got invalid theme mode",)

# Run in the page once it has loaded: its figures that did not load, and its error output cells.
# The window width pages are laid out and photographed at (a laptop's).
SHOT_WIDTH = 1280

PAGE_REPORT = """(() => {
  const broken = [...document.images]
    .filter(img => !img.complete || img.naturalWidth === 0)
    .map(img => img.getAttribute('src'));
  const errors = document.querySelectorAll('.output.traceback, .output_error, .cell_output .traceback');
  // A page wider than the window (a word or a link that cannot wrap) scrolls sideways: the
  // reader loses the left of every line.
  const root = document.documentElement;
  return JSON.stringify({images: document.images.length, broken, tracebacks: errors.length,
                         height: root.scrollHeight, width: root.scrollWidth, window: root.clientWidth,
                         inline_as_text: document.body.innerText.includes('data:image/')});
})()"""


def browser() -> str | None:
    """The first headless-capable browser on PATH, or None."""
    return next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)


class Browser:
    """A headless Chromium driven over the DevTools protocol on a pipe."""

    def __init__(self, exe: str) -> None:
        self._profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        # The browser reads commands on fd 3 and writes replies on fd 4.
        self.process = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=lambda: (os.dup2(to_browser, 3), os.dup2(from_browser, 4)),
        )  # fmt: skip
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _messages(self, deadline: float):
        while time.monotonic() < deadline:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                yield json.loads(raw)
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise PerceptError("the browser closed its DevTools pipe")
                self._buffer += chunk
        raise TimeoutError

    def call(self, method: str, *, session: bool = False, timeout: float = 60, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        for reply in self._messages(time.monotonic() + timeout):
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise PerceptError(f"browser: {method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError

    def wait_for(self, method: str, timeout: float = 60) -> None:
        if any(e.get("method") == method for e in self.events):
            return
        for event in self._messages(time.monotonic() + timeout):
            self.events.append(event)
            if event.get("method") == method:
                return

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self._write)
        os.close(self._read)
        self._profile.cleanup()


# A resource from another host that cannot be reached (a CDN such as MathJax's, on a machine
# without internet) is the network's failure, not the page's: reported apart, not as a problem.
OFFLINE = ("net::ERR_NAME_NOT_RESOLVED", "net::ERR_INTERNET_DISCONNECTED", "net::ERR_CONNECTION")


def _unreachable(events: list[dict]) -> list[str]:
    """URLs of other hosts the page could not reach."""
    return [
        e["params"]["entry"].get("url", "")
        for e in events
        if e.get("method") == "Log.entryAdded"
        and e["params"].get("entry", {}).get("url", "").startswith(("http://", "https://"))
        and any(code in e["params"]["entry"].get("text", "") for code in OFFLINE)
    ]


def _console_errors(events: list[dict]) -> list[str]:
    out = []
    unreachable = set(_unreachable(events))
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            out.append(details.get("exception", {}).get("description") or details.get("text"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            if entry.get("url") in unreachable:
                continue
            out.append(f"{entry.get('text')} {entry.get('url', '')}".strip())
    return [
        line.splitlines()[0] for line in out if line and not line.startswith(THEME_NOISE)
    ]


def check_page(
    tab: Browser, page: Path, shot: Path | None = None, timeout: float = 60, offline=None
) -> list[str]:
    """What is wrong with one page as Chromium renders it (empty when nothing is); the other hosts
    it could not reach are added to the set `offline` when one is given."""
    tab.events.clear()
    # The page is laid out at the screenshot's width from the start: resizing the window after the
    # load leaves the theme's sidebars where the first layout put them.
    tab.call("Emulation.setDeviceMetricsOverride", session=True, width=SHOT_WIDTH, height=900,
             deviceScaleFactor=1, mobile=False)  # fmt: skip
    tab.call("Page.navigate", session=True, url=page.resolve().as_uri())
    try:
        tab.wait_for("Page.loadEventFired", timeout)
    except TimeoutError:
        return [f"{page.name}: did not load within {timeout:g} s"]
    time.sleep(0.3)  # the theme's scripts run after the load event
    report = json.loads(
        tab.call("Runtime.evaluate", session=True, expression=PAGE_REPORT)["result"]["value"]
    )
    problems = [f"{page.name}: console: {e}" for e in _console_errors(tab.events)]
    if offline is not None:
        offline.update(_unreachable(tab.events))
    problems += [f"{page.name}: figure {src} did not load" for src in report["broken"]]
    if report["inline_as_text"]:  # e.g. a Markdown image with a data: address, which MyST prints
        problems.append(f"{page.name}: an inline image's data: address is shown as text")
    if report["width"] > report["window"] + 1:
        problems.append(f"{page.name}: the page is {report['width']} px wide in a {report['window']} px window")
    if report["tracebacks"]:
        problems.append(f"{page.name}: {report['tracebacks']} error output cell(s) shown")
    if shot is not None:
        height = min(int(report["height"]), 16000)
        tab.call("Emulation.setDeviceMetricsOverride", session=True, width=SHOT_WIDTH, height=height,
                 deviceScaleFactor=1, mobile=False)  # fmt: skip
        data = tab.call("Page.captureScreenshot", session=True, format="png")["data"]
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot.write_bytes(base64.b64decode(data))
        tab.call("Emulation.clearDeviceMetricsOverride", session=True)
    return problems


def book_pages(html: Path) -> list[Path]:
    """The book's own pages: not Sphinx's search and index pages, its sources, or a page that only
    redirects to another (the root index.html)."""
    skip = {"search.html", "genindex.html"}
    return sorted(
        p
        for p in html.rglob("*.html")
        if p.name not in skip
        and not {"_static", "_sources", "_images"} & set(p.parts)
        and 'http-equiv="refresh"' not in p.read_text(errors="replace")[:2000].lower()
    )


def check_book(
    html: Path, shots: Path | None = None, offline: set | None = None
) -> tuple[list[Path], list[str]]:
    """(pages opened, problems) for a built book's HTML folder; `shots`: where to write a
    screenshot of each page (the page's path with .png); `offline`: a set that receives the URLs
    of other hosts the pages could not reach."""
    exe = browser()
    if exe is None:
        raise PerceptError(f"no browser found (looked for {', '.join(BROWSERS)})")
    html = Path(html)
    pages = book_pages(html)
    if not pages:
        raise PerceptError(f"no pages in {html}: build the book first (make book)")
    tab = Browser(exe)
    try:
        problems = []
        for page in pages:
            shot = None if shots is None else Path(shots) / page.relative_to(html).with_suffix(".png")
            problems += check_page(tab, page, shot, offline=offline)
    finally:
        tab.close()
    return pages, problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m percept.cli.browse", description=__doc__)
    p.add_argument("html", type=Path, help="the book's HTML folder, e.g. _build/html")
    p.add_argument("--shots", type=Path, default=None, help="write a screenshot of each page here")
    args = p.parse_args(argv)
    offline: set = set()
    try:
        pages, problems = check_book(args.html, args.shots, offline)
    except PerceptError as exc:
        print(f"percept browse: error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    for url in sorted(offline):
        print(f"not reachable from here (needs internet): {url}", file=sys.stderr)
    print(f"{len(pages)} pages, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
