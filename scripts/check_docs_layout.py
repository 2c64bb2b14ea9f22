"""Checks the built docs site: no raw Sphinx role (``:class:`X```: mkdocstrings shows those as
text) in any page, and, in headless Chromium at a laptop width, no table and no code block wider
than its box (nothing hidden behind a horizontal scroll bar, no clipped comment), no name in a
table's first column broken mid-word, and no page that scrolls sideways. Writes a screenshot of each page it checks.

    python scripts/check_docs_layout.py site/ [--width 1400] [--screenshots DIR] [PAGE ...]

Talks to Chromium through the DevTools protocol over a pipe (``--remote-debugging-pipe``:
NUL-separated JSON on file descriptors 3 and 4), so it needs nothing beyond the standard library
and the ``chromium`` binary (Debian package ``chromium``). Exit status 1 lists every overflow.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Every table wrapper, code block and the page: its scroll width against its box (1 px slack for
# sub-pixel rounding). Material wraps tables in .md-typeset__scrollwrap; code scrolls in <code>.
MEASURE = r"""
(() => {
  const out = [];
  const text = (el) => el.innerText.replace(/\s+/g, " ").trim().slice(0, 90);
  for (const table of document.querySelectorAll("article table")) {
    const box = table.closest(".md-typeset__scrollwrap") || table.parentElement;
    if (box.offsetParent === null) continue;  // inside a closed <details>: measured when open
    if (box.scrollWidth > box.clientWidth + 1)
      out.push({kind: "table", width: box.scrollWidth, box: box.clientWidth, text: text(table)});
  }
  for (const code of document.querySelectorAll("article pre > code")) {
    if (code.offsetParent === null) continue;
    if (code.scrollWidth > code.clientWidth + 1)
      out.push({kind: "code", width: code.scrollWidth, box: code.clientWidth, text: text(code)});
  }
  // A name in a table's first column (`store_dtype`) broken mid-word: one code span without
  // spaces on several lines, which a squeezed column does while others have room.
  for (const code of document.querySelectorAll("article table td:first-child code")) {
    if (code.offsetParent === null || /\s/.test(code.innerText)) continue;
    if (code.getClientRects().length > 1)
      out.push({kind: "name broken", width: code.scrollWidth,
                box: Math.round(code.closest("td").clientWidth), text: code.innerText});
  }
  const page = document.documentElement;
  if (page.scrollWidth > window.innerWidth + 1)
    out.push({kind: "page", width: page.scrollWidth, box: window.innerWidth, text: ""});
  return out;
})()
"""
# Open every <details> so that the tables and code inside them are measured too.
OPEN_DETAILS = "document.querySelectorAll('details').forEach(d => d.open = true); true"


class Browser:
    """Headless Chromium driven over ``--remote-debugging-pipe``."""

    def __init__(self, binary: str, width: int, height: int) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire() -> None:  # in the child: the pipe ends on fds 3 (read) and 4 (write)
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._profile = tempfile.mkdtemp(prefix="blt-docs-chromium-")
        args = [binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--hide-scrollbars", "--no-first-run", f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}", "about:blank"]  # fmt: skip
        # close_fds=False: fds 3 and 4 are made in preexec_fn, after which subprocess would
        # close every fd not in pass_fds; the pipes' other fds are close-on-exec anyway.
        self.proc = subprocess.Popen(args, close_fds=False, preexec_fn=wire,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._id = 0
        self.width, self.height = width, height
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    events: list[dict] = []

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read())

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True, awaitPromise=True)  # fmt: skip
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        height = self.evaluate("document.documentElement.scrollHeight")
        data = self.call("Page.captureScreenshot", session=True, format="png",
                         captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": self.width, "height": min(height, 6000),
                               "scale": 1})["data"]  # fmt: skip
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self._profile, ignore_errors=True)


# A role as the HTML shows it: its backticks became <code> (or stayed, inside code blocks).
SPHINX_ROLE = re.compile(r":(class|func|meth|attr|mod|data|exc|obj):(<code>|`)")


def raw_roles(site: Path) -> list[str]:
    """``page: text`` for every Sphinx role left as raw text in the built HTML."""
    found = []
    for page in sorted(site.rglob("*.html")):
        for match in SPHINX_ROLE.finditer(page.read_text(encoding="utf-8")):
            found.append(f"{page.relative_to(site)}: ...{match.group(0)}...")
    return found


def pages_of(site: Path) -> list[Path]:
    return sorted(
        p
        for p in site.rglob("index.html")
        if "search" not in p.parts and p.parent != site / "assets"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path)
    parser.add_argument("pages", nargs="*", help="pages relative to the site (default: all)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--screenshots", type=Path, default=None, help="folder for PNG screenshots")
    parser.add_argument(
        "--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser")
    )
    args = parser.parse_intermixed_args(argv)  # pages may follow the options
    if not args.chromium:
        print("check_docs_layout: no chromium binary (Debian package `chromium`)", file=sys.stderr)
        return 2
    site = args.site.resolve()
    roles = raw_roles(site)
    print(f"check_docs_layout: {len(roles)} raw Sphinx role(s) in the HTML")
    for line in roles:
        print("  " + line)
    pages = [site / p for p in args.pages] if args.pages else pages_of(site)
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    browser = Browser(args.chromium, args.width, args.height)
    problems = []
    try:
        for page in pages:
            name = (
                page.relative_to(site).parent.as_posix().replace(".", "index", 1)
                if page.parent == site
                else page.relative_to(site).parent.as_posix()
            )
            browser.open(page.as_uri())
            if args.screenshots:
                browser.screenshot(args.screenshots / f"{name.replace('/', '_')}.png")
            browser.evaluate(OPEN_DETAILS)
            for item in browser.evaluate(MEASURE) or []:
                problems.append(f"{name}: {item['kind']} {item['width']} px in {item['box']} px: "
                                f"{item['text']}")  # fmt: skip
    finally:
        browser.close()
    print(f"check_docs_layout: {len(pages)} pages at {args.width} px: "
          f"{len(problems)} overflow(s)")  # fmt: skip
    for line in problems:
        print("  " + line)
    return 1 if problems or roles else 0


if __name__ == "__main__":
    sys.exit(main())
