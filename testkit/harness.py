"""Drive the real app in headless Chromium: start the server, wait for Streamlit to settle, check what a person sees.

Shared by the browser tests (`tests/browser/`) and `scripts/screenshots.py`. Every wait is bounded.
"""

from __future__ import annotations

import ast
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
APP_FILE = ROOT / "app.py"

# Debian's Chromium, launched directly: Playwright's own browser download is not available everywhere.
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
WINDOW = {"width": 1440, "height": 1000}

SERVER_START_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0

_ANSI_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Settings the app reads from the environment; the tests decide each one, nothing leaks in from the shell.
_APP_ENV_PREFIXES = ("INFERENCE_EXPLORER_", "DATABRICKS_", "MLFLOW_")


def find_chromium() -> str | None:
    """The Chromium to drive: $INFERENCE_EXPLORER_CHROMIUM, else the first one on PATH."""
    chosen = os.environ.get("INFERENCE_EXPLORER_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).exists() else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- The pages app.py lists ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageEntry:
    title: str
    script: str  # e.g. "views/trends.py"


def app_pages(app_file: Path = APP_FILE) -> list[PageEntry]:
    """The `st.Page(...)` entries of `PAGES` in app.py, read from its source (importing it would run the app)."""
    tree = ast.parse(app_file.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PAGES" for t in node.targets):
            return [_page_entry(call) for call in getattr(node.value, "elts", []) if isinstance(call, ast.Call)]
    raise ValueError(f"No PAGES list in {app_file}")


def _page_entry(call: ast.Call) -> PageEntry:
    script = ast.literal_eval(call.args[0]) if call.args else ""
    keywords = {k.arg: k.value for k in call.keywords}
    title = ast.literal_eval(keywords["title"]) if "title" in keywords else Path(script).stem.replace("_", " ")
    return PageEntry(title=str(title), script=str(script))


# --- The app server -----------------------------------------------------------------------------------------


def app_environment(data_dir: Path, **settings: str) -> dict[str, str]:
    """The shell's environment without any app settings, plus the data dir, offline model hubs and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_APP_ENV_PREFIXES)}
    env.update(
        INFERENCE_EXPLORER_DATA_DIR=str(data_dir),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
        PYTHONUNBUFFERED="1",
        NO_COLOR="1",  # plain tracebacks in the server log
    )
    env.update(settings)
    return env


class AppServer:
    """`streamlit run app.py` on a free loopback port, in its own process group, logging to a file."""

    def __init__(self, env: Mapping[str, str], log_path: Path, port: int | None = None) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = SERVER_START_TIMEOUT_S) -> AppServer:
        command = [
            sys.executable, "-m", "streamlit", "run", str(APP_FILE),
            "--server.port", str(self.port), "--server.address", "127.0.0.1", "--server.headless", "true",
            "--browser.gatherUsageStats", "false",
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_healthy(timeout_s)
        return self

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"The app exited with code {self._process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"The app did not answer /_stcore/health within {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(_ANSI_CODES.sub("", text).splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server's own process group (SIGTERM, then SIGKILL after a bounded wait)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        group = os.getpgid(process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)

    def __enter__(self) -> AppServer:
        return self.start() if self._process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- The browser --------------------------------------------------------------------------------------------

# Counts script runs as the page sees them, so a wait after an action can insist on a *new* finished run.
_RUN_COUNTER_JS = """
window.__stRunStarts = 0;
new MutationObserver((changes) => {
  for (const change of changes) {
    if (change.target.getAttribute('data-test-script-state') === 'running' && change.oldValue !== 'running') {
      window.__stRunStarts += 1;
    }
  }
}).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                      attributeFilter: ['data-test-script-state']});
"""


@contextmanager
def chromium(window: Mapping[str, int] = WINDOW) -> Iterator[Any]:
    """A fresh headless Chromium profile (a Playwright BrowserContext) that accepts downloads."""
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:
        raise RuntimeError("No Chromium found: install it (`apt-get install chromium`).")
    with tempfile.TemporaryDirectory(prefix="ie-chromium-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport=dict(window),
            accept_downloads=True,
            timezone_id="UTC",
            locale="en-US",
        )
        context.add_init_script(_RUN_COUNTER_JS)
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


# True when Streamlit has finished: no script running, nothing stale or still loading, every chart drawn.
_SETTLED_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app) return 'no app';
  if (app.getAttribute('data-test-connection-state') !== 'CONNECTED') return 'not connected';
  const script = app.getAttribute('data-test-script-state');
  if (script !== 'notRunning') return 'script ' + script;
  if (document.querySelector('[data-testid="stStatusWidget"]')) return 'status widget';
  if (document.querySelector('[data-stale="true"]')) return 'stale elements';
  if (document.querySelector('[data-testid="stSkeleton"]')) return 'skeleton';
  if (document.querySelector('[data-testid="stSpinner"]')) return 'spinner';
  for (const chart of document.querySelectorAll('[data-testid="stPlotlyChart"]')) {
    const plot = chart.querySelector('.js-plotly-plot');
    if (!plot || !plot._fullLayout || !plot.querySelector('.main-svg')) return 'plotly not drawn';
  }
  return 'settled';
}"""


def run_starts(page: Any) -> int:
    return int(page.evaluate("window.__stRunStarts || 0"))


def wait_until_settled(
    page: Any, after_runs: int | None = None, timeout_s: float = SETTLE_TIMEOUT_S, quiet_s: float = 0.6
) -> None:
    """Wait until the app is settled and stays so for `quiet_s`; with `after_runs`, only after a new run started."""
    deadline = time.monotonic() + timeout_s
    settled_since: float | None = None
    state = "not checked"
    while time.monotonic() < deadline:
        state = page.evaluate(_SETTLED_JS)
        fresh = after_runs is None or run_starts(page) > after_runs
        now = time.monotonic()
        if state == "settled" and fresh:
            settled_since = settled_since or now
            if now - settled_since >= quiet_s:
                return
        else:
            settled_since = None
        time.sleep(0.15)
    raise TimeoutError(f"The app did not settle within {timeout_s:.0f} s (last state: {state}) at {page.url}")


def act_and_settle(page: Any, action: Callable[[], object], timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    """Do something that makes Streamlit rerun, then wait for that rerun to finish."""
    before = run_starts(page)
    action()
    wait_until_settled(page, after_runs=before, timeout_s=timeout_s)


def open_app(page: Any, url: str, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    page.goto(url, wait_until="domcontentloaded")
    wait_until_settled(page, timeout_s=timeout_s)


def nav_links(page: Any) -> dict[str, str]:
    """Sidebar navigation: page title -> URL, as the running app renders it."""
    pairs = page.evaluate(
        """() => [...document.querySelectorAll('[data-testid="stSidebarNavLink"]')].map(a => [
             (a.querySelector('[data-testid="stMarkdownContainer"]') || a).textContent.trim(), a.href])"""
    )
    return {title: href for title, href in pairs}


def main_text(page: Any) -> str:
    return str(page.locator('[data-testid="stApp"]').inner_text())


def page_problems(page: Any) -> list[str]:
    """What a person must never see: exception boxes, tracebacks, error alerts."""
    exceptions = page.locator('[data-testid="stException"]').all_inner_texts()
    errors = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
    problems = [f"exception box: {text[:300]}" for text in exceptions]
    problems += [f"error alert: {text[:300]}" for text in errors]
    html = page.content()
    problems += [f"{word!r} in the page" for word in ("Traceback (most recent call last)", 'File "/') if word in html]
    return problems


# --- Plotly charts ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlotReport:
    title: str
    width: float
    height: float
    trace_types: tuple[str, ...]
    points: int  # data values Plotly received, over every trace
    coloured_pixels: int  # saturated pixels inside the plotting area, i.e. drawn traces (gridlines are grey)
    dragmode: str

    @property
    def drawn(self) -> bool:
        return self.width > 0 and self.height > 0 and self.points > 0 and self.coloured_pixels >= MIN_COLOURED_PIXELS


MIN_COLOURED_PIXELS = 30

_PLOT_INFO_JS = """(plot) => {
  const box = plot.getBoundingClientRect();
  const svg = plot.querySelector('.main-svg');
  const svgBox = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  const areas = [...plot.querySelectorAll('.draglayer .nsewdrag')].map((r) => {
    const b = r.getBoundingClientRect();
    return [b.left - box.left, b.top - box.top, b.width, b.height];
  });
  const count = (trace) => ['x', 'y', 'z', 'values', 'lat', 'r']
    .map((k) => (trace[k] && trace[k].length) || 0).reduce((a, b) => Math.max(a, b), 0);
  const data = plot._fullData || [];
  const title = plot.querySelector('.gtitle');
  return {
    title: title ? title.textContent : '',
    width: svgBox.width, height: svgBox.height,
    types: data.map((t) => t.type), points: data.map(count).reduce((a, b) => a + b, 0),
    areas: areas.length ? areas : [[0, 0, box.width, box.height]],
    dragmode: String((plot._fullLayout || {}).dragmode),
  };
}"""


def coloured_pixels(png: bytes, areas: list[list[float]], scale: float = 1.0) -> int:
    """Pixels with clear colour (HSV saturation and value both high) inside the given areas of a screenshot."""
    hsv = np.asarray(Image.open(io.BytesIO(png)).convert("RGB").convert("HSV"), dtype=np.int16)
    inside = np.zeros(hsv.shape[:2], dtype=bool)
    for left, top, width, height in areas:
        x0, y0 = max(int(left * scale), 0), max(int(top * scale), 0)
        inside[y0 : int((top + height) * scale), x0 : int((left + width) * scale)] = True
    coloured = (hsv[..., 1] > 90) & (hsv[..., 2] > 60)
    return int((coloured & inside).sum())


_PLOTS = '[data-testid="stPlotlyChart"] .js-plotly-plot'


def _report(plot: Any) -> PlotReport:
    plot.scroll_into_view_if_needed()
    info = plot.evaluate(_PLOT_INFO_JS)
    png = plot.screenshot(animations="disabled")
    return PlotReport(
        title=info["title"],
        width=info["width"],
        height=info["height"],
        trace_types=tuple(info["types"]),
        points=int(info["points"]),
        coloured_pixels=coloured_pixels(png, info["areas"]),
        dragmode=info["dragmode"],
    )


def visible_plot_reports(page: Any, reports: dict[int, PlotReport] | None = None) -> dict[int, PlotReport]:
    """Reports for the Plotly charts currently shown (not in a hidden tab), keyed by their order on the page."""
    reports = {} if reports is None else reports
    plots = page.locator(_PLOTS)
    for index in range(plots.count()):
        if index not in reports and plots.nth(index).is_visible():
            reports[index] = _report(plots.nth(index))
    return reports


def plot_reports(page: Any, selector: str = ".js-plotly-plot") -> list[PlotReport]:
    """Every Plotly chart `selector` finds on a page that is not the app (a saved report), in order."""
    plots = page.locator(selector)
    return [_report(plots.nth(index)) for index in range(plots.count())]


def all_plot_reports(page: Any) -> list[PlotReport]:
    """Every Plotly chart on the page, opening each tab in turn to see the charts inside it."""
    reports = visible_plot_reports(page)
    tabs = page.locator('[data-testid="stTabs"] [role="tab"]')
    for index in range(tabs.count()):
        tabs.nth(index).click()
        page.wait_for_timeout(300)
        wait_until_settled(page)
        visible_plot_reports(page, reports)
    unseen = sorted(set(range(page.locator(_PLOTS).count())) - set(reports))
    if unseen:
        raise AssertionError(f"Charts {unseen} were never shown (hidden outside any tab?) at {page.url}")
    return [reports[index] for index in sorted(reports)]


# --- Screenshots --------------------------------------------------------------------------------------------

_CONTENT_HEIGHT_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const side = document.querySelector('[data-testid="stSidebarContent"]');
  return Math.ceil(Math.max(main ? main.scrollHeight : 0, side ? side.scrollHeight : 0));
}"""


def full_page_png(page: Any, path: Path, width: int = WINDOW["width"], min_height: int = WINDOW["height"]) -> int:
    """Grow the window to the content's height (Streamlit scrolls inside <main>, so a plain full-page screenshot
    would cut it), wait for the layout to settle, and save a PNG. Returns the height used."""
    height = min_height
    for _ in range(4):  # growing the window can reflow the content once more; stop when stable
        needed = max(min_height, int(page.evaluate(_CONTENT_HEIGHT_JS)))
        if needed == height and page.viewport_size["height"] == height:
            break
        height = needed
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(400)
        wait_until_settled(page)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.mouse.move(width - 2, height - 2)  # the empty bottom margin: no tooltip, modebar or sidebar button shown
    page.wait_for_timeout(300)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), animations="disabled", caret="hide")
    page.set_viewport_size({"width": width, "height": min_height})
    return height


# --- The first start, as the browser tests watch it -----------------------------------------------------------

BROWSER_DEMO_REQUESTS = 3_000  # small: the first start builds it in about half a minute on 2 cores


@dataclass
class FirstStart:
    """What the first browser visit saw while the app built its demo data."""

    status_labels: list[str] = field(default_factory=list)
    progress_texts: list[str] = field(default_factory=list)
    progress_values: list[float] = field(default_factory=list)
    seconds: float = 0.0
    final_text: str = ""
    problems: list[str] = field(default_factory=list)
    nav_links: dict[str, str] = field(default_factory=dict)  # page title -> URL, from the sidebar

    def record(self, view: dict[str, Any]) -> None:
        """Keep each new status label, progress text and progress value, in the order they appeared."""
        self.status_labels += [label for label in view["status"] if label not in self.status_labels]
        for bar in view["progress"]:
            if bar["text"] and bar["text"] not in self.progress_texts:
                self.progress_texts.append(bar["text"])
            value = bar["value"]
            if value == value and (not self.progress_values or self.progress_values[-1] != value):  # NaN: no bar
                self.progress_values.append(value)


# Every state a progress bar is drawn in, kept as the page draws it: a step the light scorers finish
# between two polls (3,000 requests score in well under a second) is still seen.
PROGRESS_LOG_JS = """
window.__ieProgressLog = [];
new MutationObserver(() => {
  for (const p of document.querySelectorAll('[data-testid="stProgress"]')) {
    const bar = p.querySelector('[role="progressbar"]');
    const state = {text: p.innerText.trim(), value: bar ? Number(bar.getAttribute('aria-valuenow')) : NaN};
    const last = window.__ieProgressLog[window.__ieProgressLog.length - 1];
    if (!last || last.text !== state.text || last.value !== state.value) window.__ieProgressLog.push(state);
  }
}).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
"""

BUILD_VIEW_JS = """() => ({
  status: [...document.querySelectorAll('[data-testid="stExpander"] summary')].map((s) => s.innerText.trim()),
  progress: (window.__ieProgressLog || []).splice(0),
  state: (document.querySelector('[data-testid="stApp"]') || {getAttribute: () => ''})
    .getAttribute('data-test-script-state'),
})"""
