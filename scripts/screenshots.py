"""Demo screenshots of every page, reproducibly, in one command: `python scripts/screenshots.py`.

Builds the demo data with the fixed default seed (50,000 requests unless told otherwise; kept in
/tmp/inference-explorer-screenshots/<requests>-seed<seed>/ and reused from there), brings its analytics rollups up
to date, starts the app on it, opens every page app.py lists in headless Chromium at a fixed window size, waits until
Streamlit has finished and every Plotly chart is drawn, and writes full-page PNGs to docs/screenshots/. On the Overview
it also clicks the at-a-glance figure's PNG download (the picture a PM pastes into a slide) and the report download,
and shoots the report as it opens from the file with every network request refused.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere

from data_access.config import Settings, load_settings  # noqa: E402
from testkit import harness  # noqa: E402

DEFAULT_REQUESTS = 50_000
DEFAULT_SEED = 7
DEFAULT_OUT = ROOT / "docs" / "screenshots"
# Outside the checkout, at the same place on every machine: the registry page shows this path.
DEFAULT_DATA_ROOT = Path(tempfile.gettempdir()) / "inference-explorer-screenshots"
CHART_WAIT_S = 60.0


def demo_settings(data_dir: Path, requests: int, seed: int) -> Settings:
    return load_settings(
        environ={
            "INFERENCE_EXPLORER_BACKEND": "duckdb",
            "INFERENCE_EXPLORER_DATA_DIR": str(data_dir),
            "INFERENCE_EXPLORER_DEMO_REQUESTS": str(requests),
            "INFERENCE_EXPLORER_DEMO_SEED": str(seed),
        },
        secrets={},
    )


def ensure_demo(data_dir: Path, requests: int, seed: int) -> None:
    """Build the demo data (generate, score, registry) unless this folder already holds it, then the rollups."""
    import duckdb

    from data_access import rollup_refresh
    from jobs.bootstrap import build_demo, demo_ready

    settings = demo_settings(data_dir, requests, seed)
    if demo_ready(settings):
        print(f"Using the demo data in {data_dir}")
    else:
        started = time.monotonic()
        last = [-1]

        def report(fraction: float, message: str) -> None:
            step = int(fraction * 20)
            if step != last[0]:
                last[0] = step
                print(f"  {fraction:4.0%}  {message}", flush=True)

        print(f"Building {requests:,} demo requests (seed {seed}) in {data_dir} …", flush=True)
        build_demo(settings, report)
        print(f"Built in {time.monotonic() - started:.0f} s")
    with duckdb.connect(str(settings.duckdb_path)) as con:
        summary = rollup_refresh.refresh_rollups(con, settings.requests_table)
    print("Rollups rebuilt" if summary.rebuilt else f"Rollups updated for {len(summary.dates)} date(s)")


def warn_without_emoji_font() -> None:
    """Page icons are emoji: without a colour emoji font Chromium draws empty boxes."""
    if shutil.which("fc-list") is None:
        return
    fonts = subprocess.run(["fc-list", ":charset=1f4ca"], capture_output=True, text=True, timeout=30).stdout
    if not fonts.strip():
        print("warning: no emoji font found; page icons will show as boxes (apt-get install fonts-noto-color-emoji)")


def wait_for_charts(page: object, deadline_s: float = CHART_WAIT_S) -> None:
    """Every chart on screen drawn with its traces, or fail loudly rather than save an unfinished picture. A chart
    Plotly has drawn whose few points are all grey (an alert's sparkline of one faded point) is only reported."""
    deadline = time.monotonic() + deadline_s
    while True:
        undrawn = [r for r in harness.visible_plot_reports(page).values() if not r.drawn]
        if not undrawn:
            return
        if time.monotonic() > deadline:
            unplotted = [r for r in undrawn if not (r.width > 0 and r.height > 0 and r.points > 0)]
            if unplotted:
                raise RuntimeError(f"Charts not drawn on {page.url}: {unplotted}")  # type: ignore[attr-defined]
            print(f"  note: {len(undrawn)} chart(s) drawn without colour (faded points): {[r.title for r in undrawn]}")
            return
        time.sleep(1.0)


def shoot(page: object, url: str, path: Path, width: int, height: int) -> None:
    harness.open_app(page, url)
    wait_for_charts(page)
    problems = harness.page_problems(page)
    if problems:
        raise RuntimeError(f"{url} shows problems: {problems}")
    used = harness.full_page_png(page, path, width=width, min_height=height)
    print(f"  {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}  ({width}x{used})", flush=True)


def open_first_request(page: object) -> None:
    """On the Requests page, select the first row of the list so the request opens below it."""
    grid = page.locator('[data-testid="stDataFrame"]').first  # type: ignore[attr-defined]
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    harness.act_and_settle(page, lambda: page.mouse.click(box["x"] + 18, box["y"] + 35 * 1.5))  # type: ignore[attr-defined]


def downloaded(page: object, button_name: str, path: Path) -> Path:
    """Click a download button on the page and keep what it gives under `path`."""
    button = page.get_by_role("button", name=re.compile(button_name))  # type: ignore[attr-defined]
    button.scroll_into_view_if_needed()
    with page.expect_download(timeout=120_000) as started:  # type: ignore[attr-defined]
        button.click()
    started.value.save_as(path)
    harness.wait_until_settled(page)
    return path


def shoot_sharing(page: object, number: int, out_dir: Path, width: int, height: int) -> list[Path]:
    """The Overview's at-a-glance PNG as downloaded, and the HTML report opened offline."""
    glance = downloaded(page, r"Download PNG", out_dir / f"{number:02d}-overview-at-a-glance.png")
    print(f"  {glance.relative_to(ROOT) if glance.is_relative_to(ROOT) else glance}  (the PNG download)", flush=True)
    with tempfile.TemporaryDirectory(prefix="ie-report-") as scratch:
        report = downloaded(page, r"Download the report", Path(scratch) / "report.html")
        tab = page.context.new_page()  # type: ignore[attr-defined]
        tab.set_viewport_size({"width": width, "height": height})
        tab.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
        tab.goto(report.as_uri(), wait_until="load", timeout=60_000)
        tab.wait_for_function(
            "() => [...document.querySelectorAll('.js-plotly-plot')].every(p => p._fullLayout && "
            "p.querySelector('.main-svg'))",
            timeout=60_000,
        )
        tab.wait_for_timeout(500)
        path = out_dir / f"{number:02d}-overview-report.png"
        tab.screenshot(path=str(path), full_page=True, animations="disabled")
        tab.close()
    print(f"  {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}  (the HTML report, offline)", flush=True)
    return [glance, path]


def take_screenshots(url: str, out_dir: Path, width: int, height: int) -> list[Path]:
    written: list[Path] = []
    with harness.chromium({"width": width, "height": height}) as browser:
        page = browser.new_page()
        harness.open_app(page, url)
        links = harness.nav_links(page)
        for number, entry in enumerate(harness.app_pages(), start=1):
            slug = links[entry.title].rstrip("/").removeprefix(url).strip("/") or Path(entry.script).stem
            path = out_dir / f"{number:02d}-{slug}.png"
            shoot(page, links[entry.title], path, width, height)
            written.append(path)
            if slug == "overview":
                written += shoot_sharing(page, number, out_dir, width, height)
            if slug == "requests":  # the list alone does not show what opening a request gives
                open_first_request(page)
                wait_for_charts(page)
                path = out_dir / f"{number:02d}-{slug}-opened.png"
                used = harness.full_page_png(page, path, width=width, min_height=height)
                print(f"  {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}  ({width}x{used})")
                written.append(path)
        page.close()
    return written


def remove_stale(out_dir: Path, written: list[Path]) -> None:
    """Drop numbered screenshots of pages that no longer exist (only files this script names)."""
    for old in out_dir.glob("[0-9][0-9]-*.png"):
        if old not in written:
            old.unlink()
            print(f"  removed stale {old.name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/screenshots.py", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="demo size (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="demo seed (default %(default)s)")
    parser.add_argument(
        "--data-dir", type=Path, help=f"where the demo data lives (default {DEFAULT_DATA_ROOT}/<requests>-seed<seed>)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNGs (default %(default)s)")
    parser.add_argument("--width", type=int, default=harness.WINDOW["width"], help="window width in px")
    parser.add_argument("--height", type=int, default=harness.WINDOW["height"], help="minimum window height in px")
    args = parser.parse_args(argv)

    if harness.find_chromium() is None:
        print("error: no Chromium found; install it (apt-get install chromium)", file=sys.stderr)
        return 2
    warn_without_emoji_font()
    data_dir = args.data_dir or DEFAULT_DATA_ROOT / f"{args.requests}-seed{args.seed}"
    ensure_demo(data_dir, args.requests, args.seed)
    (args.out).mkdir(parents=True, exist_ok=True)
    env = harness.app_environment(
        data_dir, INFERENCE_EXPLORER_DEMO_REQUESTS=str(args.requests), INFERENCE_EXPLORER_DEMO_SEED=str(args.seed)
    )
    with harness.AppServer(env, data_dir / "screenshots-app.log") as server:
        print(f"App on {server.url}; writing {args.width}px-wide full-page screenshots to {args.out}")
        written = take_screenshots(server.url, args.out, args.width, args.height)
    remove_stale(args.out, written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
