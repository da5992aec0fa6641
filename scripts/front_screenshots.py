"""
Screenshots of the operator's front for docs/panel.md: the tiles, the
compact table, a state filter applied, and the live charts, of a network of
200 simulated CPs updated every second.

    .venv/bin/python scripts/front_screenshots.py [--out docs/img] [--cps 200]

The page is Central's own static page (evnet/central/web/static), served
with a simulated event stream by the browser tests' stand-in for Central
(tests/frontfake.py): the same files and the same stream format as a real
Central, so the views are what an operator sees; the figures are made up.
Needs Debian's chromium (/usr/bin/chromium) and Playwright for Python (both
installed by scripts/test.sh).
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.frontfake import FakeCentral, network  # noqa: E402
from tests.test_web_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402


def vary_power(server: FakeCentral, stop: threading.Event) -> None:
    """Until C{stop}: every second, the charging CPs' power follows one slow wave (the charts show a trend)."""
    base = {cp_id: cp["kw"] for cp_id, cp in server.cps.items() if cp["kw"]}
    start = time.monotonic()
    while not stop.wait(1.0):
        level = 0.65 + 0.35 * math.sin((time.monotonic() - start) / 25)
        with server.lock:
            for cp_id, kw in base.items():
                server.cps[cp_id]["kw"] = round(kw * level, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="where the PNGs go (default docs/img)")
    parser.add_argument("--cps", type=int, default=200, help="simulated CPs (default 200)")
    parser.add_argument("--wait", type=float, default=150,
                        help="seconds of stream before the first shot, so the charts have a line (default 150)")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"front_screenshots: {CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)",
              file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    server = FakeCentral(network(args.cps))
    server.tick_every_second()
    stop = threading.Event()
    threading.Thread(target=vary_power, args=(server, stop), daemon=True).start()
    shots = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server.url)
            page.wait_for_selector('#conn[data-conn="live"]', timeout=15000)
            time.sleep(args.wait)  # the charts' lines (of a 10-minute window) need some minutes of stream

            def shot(name, what):
                path = args.out / f"front-{name}.png"
                page.screenshot(path=str(path))
                shots.append((path, what))

            shot("grid", "the summary bar and the CP tiles")
            page.locator("#view-table").click()
            shot("table", "the compact table view")
            page.locator('#summary .count[data-state="AVERIADO"]').click()
            shot("filter", "the AVERIADO count clicked: only those CPs are shown")
            page.locator('#summary .count[data-state="AVERIADO"]').click()
            page.locator("#view-grid").click()
            page.locator('.tile[data-state="SUMINISTRANDO"]').first.click()  # its charge is charted too
            time.sleep(3)
            # The charts at the top of the window, under the summary bar (which stays at the top).
            page.evaluate("document.querySelector('#charts').scrollIntoView({block: 'start'}); window.scrollBy(0, -60)")
            time.sleep(1)
            shot("charts", "the network's power and a selected CP's charge (kW, kWh)")
            browser.close()
    finally:
        stop.set()
        server.close()
    for path, what in shots:
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {what} "
              f"({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
