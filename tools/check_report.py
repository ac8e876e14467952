"""Render the Snakemake HTML report headless and check that it shows every category.

Usage::

    python tools/check_report.py results/report.html [--screenshot report.png]

The report (a React app with its data embedded as JavaScript) is rendered by Debian's
Chromium in headless mode; the DOM *after* the scripts ran (``--dump-dom``) is parsed and
must contain the rendered app (navigation with a "Results" section) and one navigation
entry per required category. A screenshot of the rendered page is written when
``--screenshot`` is given. As a second, independent check the embedded ``categories``
data is read and every required category must hold at least one result; and no caption
nor the workflow description may hold unrendered Jinja (``{{`` or ``{%``).

Chromium is installed with ``apt-get install -y chromium`` when it is missing and the
script runs as root with apt-get available; otherwise it stops with a message.

Exit status: 0 = report renders with every category; 1 = the report is broken or
incomplete (the message lists what is missing); 2 = the check could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
REQUIRED = ["Overview", "QC", "Integration", "Annotation", "Clonotypes", "Association",
            "Scorecards", "Provenance"]
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=15000",
    # console messages (uncaught JS errors) go to stderr so they can be reported
    "--enable-logging=stderr", "--v=0",
]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
        "source", "track", "wbr"}
MIN_APP_ELEMENTS = 50
MIN_TEXT_CHARS = 50
# Jinja markup that must not survive the rendering of captions and the workflow description
TEMPLATE_MARKERS = ("{{", "{%")


class CheckError(Exception):
    """The check cannot run (exit status 2)."""


# ------------------------------------------------------------------ rendered DOM

@dataclass
class RenderedPage:
    """What the rendered report's DOM shows."""

    has_app: bool = False
    app_elements: int = 0
    text_chars: int = 0
    headings: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    error_page: str | None = None


class _ReportDom(HTMLParser):
    """Walks the dumped DOM: the #app subtree, the navigation's Results section."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = RenderedPage()
        self.stack: list[str] = []
        self.app_depth: int | None = None
        self.skip_depth: int | None = None   # inside <script>/<style>
        self.heading: list[str] | None = None  # text of a "uppercase" list heading
        self.results_ul: int | None = None   # depth of the <ul> holding "Results"
        self.item: list[str] | None = None   # text of a category entry
        self.title: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in VOID:
            if self.app_depth is not None:
                self.page.app_elements += 1
            return
        self.stack.append(tag)
        depth = len(self.stack)
        if tag in ("script", "style") and self.skip_depth is None:
            self.skip_depth = depth
        if tag == "title":
            self.title = []
        if a.get("id") in ("main-frame-error", "main-message") or "neterror" in (
                a.get("class") or "").split():
            self.page.error_page = self.page.error_page or f"<{tag} id={a.get('id')}>"
        if a.get("id") == "app" and self.app_depth is None:
            self.page.has_app = True
            self.app_depth = depth
            return
        if self.app_depth is None:
            return
        self.page.app_elements += 1
        if tag == "li":
            if "uppercase" in (a.get("class") or "").split():
                self.heading = []
            elif self.results_ul is not None and depth == self.results_ul + 1:
                self.item = []

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID or tag not in self.stack:
            return
        while self.stack:  # tolerate unclosed children
            depth = len(self.stack)
            top = self.stack.pop()
            self._close(top, depth)
            if top == tag:
                break

    def _close(self, tag: str, depth: int) -> None:
        if self.skip_depth == depth:
            self.skip_depth = None
        if tag == "title" and self.title is not None:
            text = "".join(self.title).strip()
            if re.search(r"can.t be reached|not available|ERR_", text):
                self.page.error_page = self.page.error_page or f"title {text!r}"
            self.title = None
        if self.app_depth == depth:
            self.app_depth = None
        if tag == "li" and self.heading is not None:
            text = " ".join("".join(self.heading).split())
            self.page.headings.append(text)
            if text.lower() == "results":
                self.results_ul = depth - 1
            elif self.results_ul is not None and depth == self.results_ul + 1:
                self.results_ul = None  # a later heading ends the Results section
            self.heading = None
        elif tag == "li" and self.item is not None and depth == (self.results_ul or -9) + 1:
            text = " ".join("".join(self.item).split())
            if text:
                self.page.categories.append(text)
            self.item = None
        elif tag == "ul" and self.results_ul == depth:
            self.results_ul = None

    def handle_data(self, data: str) -> None:
        if self.title is not None:
            self.title.append(data)
        if self.skip_depth is not None:
            return
        if self.app_depth is not None:
            self.page.text_chars += len(data.strip())
        if self.heading is not None:
            self.heading.append(data)
        if self.item is not None:
            self.item.append(data)


def parse_rendered(dom: str) -> RenderedPage:
    """Parse the DOM dumped by Chromium after the report's scripts ran."""
    parser = _ReportDom()
    parser.feed(dom)
    parser.close()
    return parser.page


def page_problems(page: RenderedPage, *, required: list[str]) -> list[str]:
    """Everything wrong with a rendered page ([] = it rendered with every category)."""
    problems = []
    if page.error_page:
        problems.append(f"Chromium shows an error page ({page.error_page})")
    if not page.has_app:
        problems.append("the page has no <div id=\"app\">: this is not a Snakemake report")
    elif page.app_elements < MIN_APP_ELEMENTS or page.text_chars < MIN_TEXT_CHARS:
        problems.append(
            f"the report app rendered almost nothing ({page.app_elements} elements, "
            f"{page.text_chars} characters of text): its JavaScript failed")
    if page.has_app and "Results" not in page.headings:
        problems.append(f"the navigation has no 'Results' section (headings: {page.headings})")
    missing = [c for c in required if c not in page.categories]
    if missing:
        problems.append(f"categories missing from the rendered navigation: {', '.join(missing)} "
                        f"(rendered: {', '.join(page.categories) or 'none'})")
    return problems


# ------------------------------------------------------------------ embedded data

def embedded_categories(html: str) -> dict[str, dict[str, list[str]]]:
    """The ``var categories = {...}`` data block of a Snakemake 9 report."""
    m = re.search(r"<script id=\"categories\">\s*var categories = (.*?);?\s*</script>", html,
                  flags=re.S)
    if not m:
        raise CheckError("the report has no <script id=\"categories\"> data block; is it a "
                         "Snakemake >= 8 report?")
    return json.loads(m.group(1))


def embedded_texts(html: str) -> dict[str, str]:
    """The report's rendered texts: the workflow description and every result's caption.

    Returns
    -------
    dict
        ``"workflow description"`` and ``"caption of <result>"`` -> the HTML text that
        Snakemake rendered (Jinja, then reStructuredText) into the report's data blocks.
    """
    texts: dict[str, str] = {}
    m = re.search(r"<script id=\"workflow-desc\">\s*var workflow_desc = (.*?);?\s*</script>",
                  html, flags=re.S)
    if m:
        texts["workflow description"] = json.loads(m.group(1))
    m = re.search(r"<script id=\"results\">\s*var results = (.*?);?\s*</script>", html,
                  flags=re.S)
    if not m:
        raise CheckError("the report has no <script id=\"results\"> data block; is it a "
                         "Snakemake >= 8 report?")
    for name, result in json.loads(m.group(1)).items():
        texts[f"caption of {name}"] = result.get("caption") or ""
    return texts


def template_problems(texts: dict[str, str]) -> list[str]:
    """Texts in which Jinja markup (``{{`` or ``{%``) was left unrendered."""
    return [f"{what} holds unrendered Jinja ({marker!r}): "
            f"{text[max(0, text.find(marker) - 40):text.find(marker) + 60]!r}"
            for what, text in texts.items() for marker in TEMPLATE_MARKERS if marker in text]


def data_problems(categories: dict[str, dict[str, list[str]]], *,
                  required: list[str]) -> list[str]:
    """Required categories that are absent from, or empty in, the embedded data."""
    problems = []
    for cat in required:
        n = sum(len(v) for v in categories.get(cat, {}).values())
        if n == 0:
            problems.append(f"category {cat} holds no result in the report's embedded data")
    return problems


# ------------------------------------------------------------------ chromium

def ensure_chromium(path: str = CHROMIUM) -> str:
    """Path of Chromium, installing Debian's package when missing (root + apt-get)."""
    if os.access(path, os.X_OK):
        return path
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise CheckError(
            f"Chromium is not installed ({path} is missing) and cannot be installed here "
            f"({'apt-get is not available' if apt is None else 'not running as root'}). "
            "Fix: install it (Debian/Ubuntu: `sudo apt-get install -y chromium`) and rerun.")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"check_report: {path} missing; installing Debian's chromium with apt-get",
          file=sys.stderr)
    cmd = [apt, "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(cmd, env=env).returncode != 0:
        subprocess.run([apt, "update"], env=env, check=False)
        if subprocess.run(cmd, env=env).returncode != 0:
            raise CheckError("`apt-get install -y chromium` failed (see above). Fix: install "
                             "Chromium by hand and rerun.")
    if not os.access(path, os.X_OK):
        raise CheckError(f"apt-get installed chromium but {path} does not exist")
    return path


def run_chromium(chromium: str, url: str, extra: list[str], *,
                 timeout: int) -> subprocess.CompletedProcess:
    """Run headless Chromium with a fresh profile folder."""
    profile = tempfile.mkdtemp(prefix="check_report_profile_")
    try:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *extra, url]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  errors="replace")
        except subprocess.TimeoutExpired:
            raise CheckError(f"Chromium did not finish within {timeout} s: {' '.join(cmd)}")
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def js_errors(stderr: str) -> list[str]:
    """Uncaught JavaScript errors that Chromium logged from the page's console."""
    return [line.strip() for line in stderr.splitlines()
            if "CONSOLE" in line and re.search(r"Uncaught|Error", line)]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file (raises CheckError when it is not a PNG)."""
    head = path.read_bytes()[:24]
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise CheckError(f"{path} is not a PNG file")
    return struct.unpack(">II", head[16:24])


def screenshot_problems(path: Path) -> list[str]:
    """A screenshot that is missing, not a PNG or blank."""
    if not path.is_file() or path.stat().st_size == 0:
        return [f"Chromium wrote no screenshot to {path}"]
    try:
        width, height = png_size(path)
    except CheckError as err:
        return [str(err)]
    if (width, height) != (1400, 1000):
        return [f"screenshot {path} is {width}x{height}, expected 1400x1000"]
    try:
        from PIL import Image  # only to measure how much the page shows
    except ImportError:
        if path.stat().st_size < 20_000:
            return [f"screenshot {path} is only {path.stat().st_size} bytes: the page is blank"]
        return []
    with Image.open(path) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 16)
    if colours is not None and len(colours) < 16:
        return [f"screenshot {path} has only {len(colours)} colours: the page is blank"]
    return []


# ------------------------------------------------------------------ main

def check(report: Path, *, screenshot: Path | None, required: list[str],
          timeout: int) -> list[str]:
    """All problems of a report ([] when it renders with every required category)."""
    if not report.is_file():
        raise CheckError(f"{report} does not exist. Fix: build it with "
                         "`snakemake --report results/report.html` after the workflow ran.")
    chromium = ensure_chromium()
    url = report.resolve().as_uri()
    dump = run_chromium(chromium, url, ["--dump-dom"], timeout=timeout)
    if dump.returncode != 0 or not dump.stdout.strip():
        raise CheckError(f"Chromium failed (exit {dump.returncode}) on {url}:\n"
                         f"{dump.stderr[-3000:]}")
    page = parse_rendered(dump.stdout)
    problems = page_problems(page, required=required)
    problems += [f"JavaScript error: {e}" for e in js_errors(dump.stderr)]
    text = report.read_text(errors="replace")
    data = embedded_categories(text)
    problems += data_problems(data, required=required)
    problems += template_problems(embedded_texts(text))
    counts = {c: sum(len(v) for v in data.get(c, {}).values()) for c in page.categories}
    print(f"check_report: rendered {page.app_elements} elements; categories in the "
          f"navigation: {', '.join(f'{c} ({counts.get(c, 0)} results)' for c in page.categories)}")
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        if screenshot.exists():
            screenshot.unlink()
        shot = run_chromium(chromium, url, [f"--screenshot={screenshot.resolve()}",
                                            "--window-size=1400,1000"], timeout=timeout)
        if shot.returncode != 0:
            problems.append(f"Chromium failed to take the screenshot (exit {shot.returncode}):"
                            f" {shot.stderr[-2000:]}")
        else:
            problems += screenshot_problems(screenshot)
            print(f"check_report: screenshot written to {screenshot}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="the report HTML (results/report.html)")
    parser.add_argument("--screenshot", type=Path, help="write a PNG screenshot here")
    parser.add_argument("--require", action="append", metavar="CATEGORY",
                        help=f"category that must be present (repeatable; default: "
                             f"{', '.join(REQUIRED)})")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per Chromium run")
    args = parser.parse_args(argv)
    try:
        problems = check(args.report, screenshot=args.screenshot,
                         required=args.require or REQUIRED, timeout=args.timeout)
    except CheckError as err:
        print(f"check_report: CANNOT CHECK {args.report}: {err}", file=sys.stderr)
        return 2
    if problems:
        print(f"check_report: {args.report} FAILED:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"check_report: {args.report} OK: renders with "
          f"{', '.join(args.require or REQUIRED)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
