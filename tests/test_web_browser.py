"""
The dashboard in a real headless browser (Debian's chromium driven by
Playwright) against real processes: Central with its web panel, an Engine
and its Monitor.  The CP's tile turns green, red on a fault, orange after a
stop click, green after resume; a charge shows the driver and live kW; the
page reconnects by itself when Central restarts.  And the tile's Revoke key
button: the CP is shown out of service with its key revoked, until a new
login brings it back.
"""

from __future__ import annotations

import os
import shutil

import pytest

from evnet.protocols import messages as m
from tests.network import registered
from tests.procs import free_port, wait_for_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
WAIT_MS = 20_000


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is missing (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def evctl_engine(procs, control_port, action, *args):
    proc = procs.command(f"evctl-{action}", "evctl", "engine", f"tcp:host=127.0.0.1:port={control_port}", action, *args)
    assert proc.wait(15) == 0, proc.output()


def tile(cp_id, state):
    return f'.tile[data-cp="{cp_id}"][data-state="{state}"]'



def start_central(procs, tmp_path, cps, *extra):
    """
    A real Central on free loopback ports with C{cps} (id -> location)
    registered in its SQLite database, its liveness timeout long enough that
    the tests' own Monitors need not send STATUS; C{extra} options added.
    Its (CP port, HTTP port), once both listen.
    """
    from tests.test_central_process import register_in_db

    cp_port, drivers_port, http_port = (free_port() for _ in range(3))
    for cp_id, location in cps.items():
        register_in_db(tmp_path / "central.db", cp_id, location, 0.3)
    procs.twistd(
        "central", "evcentral",
        "--listen", f"tcp:{cp_port}:interface=127.0.0.1", "--drivers", f"tcp:{drivers_port}:interface=127.0.0.1",
        "--http", f"tcp:{http_port}:interface=127.0.0.1", "--db", f"sqlite:{tmp_path / 'central.db'}",
        "--liveness-timeout", "600", *extra,
    )
    wait_for_port(http_port)
    wait_for_port(cp_port)
    return cp_port, http_port


def test_the_dashboard_follows_a_charging_point_live(procs, tmp_path, browser):
    cp_port, drivers_port, http_port, engine_port, control_port = (free_port() for _ in range(5))
    central_args = [
        "--listen", f"tcp:{cp_port}:interface=127.0.0.1",
        "--drivers", f"tcp:{drivers_port}:interface=127.0.0.1",
        "--http", f"tcp:{http_port}:interface=127.0.0.1",
        "--db", f"sqlite:{tmp_path / 'central.db'}",
    ]
    central = procs.twistd("central", "evcentral", *central_args)
    procs.twistd(
        "engine", "evengine",
        "--listen", f"tcp:{engine_port}:interface=127.0.0.1",
        "--control", f"tcp:{control_port}:interface=127.0.0.1",
        "--state-dir", str(tmp_path / "engine-state"),
    )
    wait_for_port(http_port)
    wait_for_port(control_port)

    page = browser.new_page(viewport={"width": 1100, "height": 760})
    page.goto(f"http://127.0.0.1:{http_port}/")
    assert page.title() == "EV CHARGING — MONITORING PANEL"
    page.wait_for_selector('#conn[data-conn="live"]', timeout=WAIT_MS)

    procs.twistd(
        "monitor", "evmonitor",
        "--cp-id", "CP1", "--location", "Calle Mayor 1", "--price", "0.3",
        "--engine", f"tcp:host=127.0.0.1:port={engine_port}",
        "--central", f"tcp:host=127.0.0.1:port={cp_port}",
        *registered(f"sqlite:{tmp_path / 'central.db'}", tmp_path, "CP1", "Calle Mayor 1", 0.3),
    )
    # Green: the CP registered and authenticated; no reload needed.
    page.wait_for_selector(tile("CP1", "ACTIVADO"), timeout=WAIT_MS)
    card = page.locator('.tile[data-cp="CP1"]')
    assert "Calle Mayor 1" in card.inner_text() and "0.300 €/kWh" in card.inner_text()
    assert page.evaluate("getComputedStyle(document.querySelector('.tile[data-cp=\"CP1\"]')).backgroundColor") \
        == "rgb(46, 158, 68)"

    # Red: a fault simulated at the Engine.
    evctl_engine(procs, control_port, "fault")
    page.wait_for_selector(tile("CP1", "AVERIADO"), timeout=WAIT_MS)
    assert "AVERIADO" in card.inner_text()
    evctl_engine(procs, control_port, "recover")
    page.wait_for_selector(tile("CP1", "ACTIVADO"), timeout=WAIT_MS)

    # Orange: the operator clicks the tile's stop button.
    card.locator('button[data-action="stop"]').click()
    page.wait_for_selector(tile("CP1", "PARADO"), timeout=WAIT_MS)
    assert "Out of Order" in card.inner_text()
    page.wait_for_function("document.querySelector('#messages').innerText.includes('stopped by the operator')",
                           timeout=WAIT_MS)
    # Green again after resume.
    card.locator('button[data-action="resume"]').click()
    page.wait_for_selector(tile("CP1", "ACTIVADO"), timeout=WAIT_MS)

    # A charge asked for at the CP: the tile shows the driver and the live power; the request is listed.
    evctl_engine(procs, control_port, "request", "D7")
    page.wait_for_selector('#requests tbody tr td:has-text("D7")', timeout=WAIT_MS)
    evctl_engine(procs, control_port, "plug")
    page.wait_for_selector(tile("CP1", "SUMINISTRANDO"), timeout=WAIT_MS)
    page.wait_for_function(
        "document.querySelector('.tile[data-cp=\"CP1\"] .charge').innerText.includes('11.0 kW')", timeout=WAIT_MS)
    assert "Driver D7" in card.inner_text()
    screenshot = tmp_path / "dashboard.png"
    page.screenshot(path=str(screenshot), full_page=True)
    if os.environ.get("EVNET_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["EVNET_SCREENSHOT"])
    evctl_engine(procs, control_port, "unplug")
    page.wait_for_selector(tile("CP1", "ACTIVADO"), timeout=WAIT_MS)
    page.wait_for_function("document.querySelectorAll('#requests tbody tr').length === 0", timeout=WAIT_MS)

    # Central restarts: the page notices, reconnects by itself and shows the CP again.
    central.stop()
    page.wait_for_selector('#conn[data-conn="reconnecting"]', timeout=WAIT_MS)
    procs.twistd("central-2", "evcentral", *central_args)
    page.wait_for_selector('#conn[data-conn="live"]', timeout=WAIT_MS)
    page.wait_for_selector(tile("CP1", "ACTIVADO"), timeout=WAIT_MS)


def test_the_revoke_button_puts_a_cp_out_of_service_and_a_new_login_brings_it_back(procs, tmp_path, browser):
    # The CP's Monitor here is the test's own (tests.test_central_process.RawMonitor, with Central's
    # liveness timeout long enough that it need not send STATUS): the tile, its key state and the button.
    from tests.test_central_process import RawMonitor

    cp_port, http_port = start_central(procs, tmp_path, {"CP1": "Calle Mayor 1"})
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    page.goto(f"http://127.0.0.1:{http_port}/")
    page.wait_for_selector('#conn[data-conn="live"]', timeout=WAIT_MS)
    monitor = RawMonitor(cp_port, "CP1")
    try:
        monitor.login()
        page.wait_for_selector('.tile[data-cp="CP1"][data-state="ACTIVADO"][data-key="active"]', timeout=WAIT_MS)
        card = page.locator('.tile[data-cp="CP1"]')
        assert "Key active" in card.inner_text()
        page.once("dialog", lambda dialog: dialog.accept())  # "Revoke the key of CP1? …"
        card.locator('button[data-action="revoke"]').click()
        revoked = monitor.receive()  # sealed under the key it revokes
        assert isinstance(revoked, m.Revoked) and revoked.reason.startswith("its key was revoked by the operator at ")
        page.wait_for_selector('.tile[data-cp="CP1"][data-state="DESCONECTADO"][data-key="revoked"]', timeout=WAIT_MS)
        text = card.inner_text()
        assert "Out of service — key revoked" in text and "CP1 out of service: its key was revoked by" in text
        assert card.locator('button[data-action="revoke"]').is_disabled()
        background = page.evaluate("getComputedStyle(document.querySelector('.tile[data-cp=\"CP1\"]')).backgroundColor")
        assert background == "rgb(91, 42, 134)"  # neither PARADO's orange nor DESCONECTADO's grey
    finally:
        monitor.close()
    again = RawMonitor(cp_port, "CP1")
    try:
        assert again.login().state == "ACTIVADO"
        page.wait_for_selector('.tile[data-cp="CP1"][data-state="ACTIVADO"][data-key="active"]', timeout=WAIT_MS)
    finally:
        again.close()


def test_the_weather_section_shows_an_alert_its_cp_out_of_service_and_evws_health(procs, tmp_path, browser):
    # EV_W's calls are made by the test itself with EV_W's token (EV_W itself: tests/test_weather_e2e.py).
    import json
    import urllib.request

    from tests.test_central_process import RawMonitor

    token = tmp_path / "evw-token"
    token.write_text("evw-browser-token\n")
    os.chmod(token, 0o600)
    cp_port, http_port = start_central(procs, tmp_path, {"CP1": "Alicante Centro"}, "--weather-token-file", str(token))

    def evw(method, path, body=None):
        request = urllib.request.Request(
            f"http://127.0.0.1:{http_port}{path}", method=method, data=json.dumps(body).encode() if body else None,
            headers={"Authorization": "Bearer evw-browser-token", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.loads(answer.read())

    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(f"http://127.0.0.1:{http_port}/")
    page.wait_for_selector('#conn[data-conn="live"]', timeout=WAIT_MS)
    assert page.locator("#weather-health").inner_text() == "EV_W: not heard from"
    assert page.locator("#no-alerts").is_visible() and not page.locator("#weather-alerts").is_visible()
    monitor = RawMonitor(cp_port, "CP1")
    try:
        monitor.login()
        page.wait_for_selector(tile("CP1", "ACTIVADO"), timeout=WAIT_MS)
        evw("PUT", "/api/v1/weather/health", {"at": 1764620004.0, "interval": 4.0, "cities": 2, "failing": ["Elche"]})
        page.wait_for_selector('#weather-health[data-health="healthy"]', timeout=WAIT_MS)
        health = page.locator("#weather-health").inner_text()
        assert "EV_W: healthy · last heartbeat" in health and "2 cities watched" in health
        assert "cannot read the weather for Elche" in health
        assert evw("POST", "/api/v1/weather/alerts", {"location": "Alicante Centro", "city": "Alicante",
                                                      "temperature": -1.5, "observed_at": 1764620000.0})["cps"] == ["CP1"]
        page.wait_for_selector('.tile[data-cp="CP1"][data-state="PARADO"][data-weather="alert"]', timeout=WAIT_MS)
        card = page.locator('.tile[data-cp="CP1"]').inner_text()
        assert "Out of service — weather alert" in card and "CP1 out of service: weather alert at Alicante Centro" in card
        row = page.locator('#weather-alerts tr[data-location="Alicante Centro"]')
        row.wait_for(timeout=WAIT_MS)
        cells = row.locator("td").all_inner_texts()
        assert cells[0:3] == ["Alicante Centro", "Alicante", "-1.5 °C"] and cells[5] == "CP1"
        assert not page.locator("#no-alerts").is_visible()
        background = page.evaluate("getComputedStyle(document.querySelector('.tile[data-cp=\"CP1\"]')).backgroundColor")
        assert background == "rgb(47, 111, 176)"  # not the operator's orange
        assert evw("DELETE", "/api/v1/weather/alerts/Alicante%20Centro") == {"ok": True, "cleared": True}
        page.wait_for_selector('.tile[data-cp="CP1"][data-state="ACTIVADO"][data-weather="none"]', timeout=WAIT_MS)
        page.wait_for_selector("#no-alerts", state="visible", timeout=WAIT_MS)
    finally:
        monitor.close()
