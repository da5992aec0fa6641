"""
The weather alert end to end on real processes: ``twistd evcentral`` with
EV_W's token, a registered CP (evengine + evmonitor) at "Alicante Centro",
and ``twistd -n evweather`` on the local weather source.  Alicante freezes
(a new weather file renamed into place): the CP goes out of service (the
API shows its weather alert, a driver's request is DENIED with the weather
reason); Central restarts during the alert (EV_W stopped, so nothing is
posted again): the CP is still out of service; EV_W comes back, Alicante
thaws: the CP is ACTIVADO again.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

from tests.network import eventually, registered
from tests.procs import free_port, wait_for_port

pytestmark = pytest.mark.slow

TOKEN = "evw-e2e-token-7c1d"
LOCATION = "Alicante Centro"


def write_atomically(path, text: str) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def get(http_port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=5) as answer:
        return json.loads(answer.read())


def cp1(http_port: int) -> dict:
    try:
        return get(http_port, "/api/v1/cps/CP1")
    except (OSError, urllib.error.URLError):
        return {}


def test_a_city_freezing_takes_its_cps_out_of_service_across_a_restart_of_central(procs, tmp_path):
    cp_port, drivers_port, http_port, engine_port, control_port = (free_port() for _ in range(5))
    db = f"sqlite:{tmp_path / 'central.db'}"
    token = tmp_path / "evw-token"
    token.write_text(TOKEN + "\n")
    os.chmod(token, 0o600)
    central_args = [
        "--listen", f"tcp:{cp_port}:interface=127.0.0.1",
        "--drivers", f"tcp:{drivers_port}:interface=127.0.0.1",
        "--http", f"tcp:{http_port}:interface=127.0.0.1",
        "--db", db, "--weather-token-file", str(token),
    ]
    central = procs.twistd("central-1", "evcentral", *central_args)
    central.wait_for("EV_Central ready", timeout=30)
    procs.twistd(
        "engine", "evengine",
        "--listen", f"tcp:{engine_port}:interface=127.0.0.1",
        "--control", f"tcp:{control_port}:interface=127.0.0.1",
        "--state-dir", str(tmp_path / "engine"), "--power-kw", "36", "--auto-plug",
    )
    wait_for_port(engine_port)
    procs.twistd(
        "monitor", "evmonitor", "--cp-id", "CP1", "--location", LOCATION, "--price", "0.30",
        "--engine", f"tcp:host=127.0.0.1:port={engine_port}",
        "--central", f"tcp:host=127.0.0.1:port={cp_port}",
        *registered(db, tmp_path, "CP1", LOCATION, 0.30),
    )
    central.wait_for("CP CP1 authenticated", timeout=30)
    assert TOKEN not in central.output()

    weather = tmp_path / "weather.txt"
    write_atomically(weather, "Alicante = 5\n")
    (tmp_path / "locations.txt").write_text(f"{LOCATION} = Alicante\n")
    evweather_args = [
        "--central", f"http://127.0.0.1:{http_port}", "--central-token-file", str(token),
        "--locations-file", str(tmp_path / "locations.txt"), "--local-weather", str(weather),
        "--interval", "0.5", "--refresh-every", "4", "--state-dir", str(tmp_path / "evw-state"),
    ]
    evw = procs.twistd("evweather-1", "evweather", *evweather_args)

    def context():
        return f"\n--- central\n{central.output()[-3000:]}\n--- evweather\n{evw.output()[-3000:]}"

    eventually(lambda: get(http_port, "/api/v1/weather")["health"]["state"] == "healthy", 30,
               "EV_W heard by Central", context)
    assert cp1(http_port)["state"] == "ACTIVADO"

    # Alicante freezes: CP1 goes out of service.
    write_atomically(weather, "Alicante = -2.5\n")
    eventually(lambda: cp1(http_port).get("weather_alert") is True, 20, "CP1 under a weather alert", context)
    shown = cp1(http_port)
    assert (shown["state"], shown["stopped"]) == ("PARADO", False)
    [alert] = get(http_port, "/api/v1/weather")["alerts"]
    assert (alert["location"], alert["city"], alert["temperature"], alert["cps"]) == (
        LOCATION, "Alicante", -2.5, ["CP1"])
    central.wait_for(r"weather alert at Alicante Centro \(Alicante, -2.5 °C\): CP1 out of service")

    requests = tmp_path / "requests.txt"
    requests.write_text("CP1 0.05\n")
    driver = procs.command("driver", "evdriver", "--driver-id", "D1", "--requests-file", str(requests),
                           "--central", f"tcp:host=127.0.0.1:port={drivers_port}", "--wait", "0.2", "--json")
    driver.wait(60)
    outcomes = [e for e in map(json.loads, driver.output().splitlines()) if e["type"] in ("ticket", "denied")]
    assert [(e["type"], e["cp"]) for e in outcomes] == [("denied", "CP1")], driver.output()
    assert outcomes[0]["reason"] == "CP CP1 is out of service: weather alert"

    # Central restarts during the alert, EV_W stopped (so nothing is posted again): still out of service.
    evw.stop()
    central.stop()
    central = procs.twistd("central-2", "evcentral", *central_args)
    central.wait_for("EV_Central ready", timeout=30)
    central.wait_for("CP CP1 authenticated", timeout=30)
    eventually(lambda: cp1(http_port).get("state") == "PARADO", 20, "CP1 PARADO after the restart", context)
    assert cp1(http_port)["weather_alert"] is True
    view = get(http_port, "/api/v1/weather")
    assert [a["location"] for a in view["alerts"]] == [LOCATION] and view["health"]["state"] == "not heard from"

    # EV_W comes back (it remembers the alert Central holds) and Alicante thaws: CP1 is back.
    evw = procs.twistd("evweather-2", "evweather", *evweather_args)
    write_atomically(weather, "Alicante = 3\n")
    eventually(lambda: cp1(http_port).get("state") == "ACTIVADO", 30, "CP1 ACTIVADO after the thaw", context)
    assert cp1(http_port)["weather_alert"] is False and get(http_port, "/api/v1/weather")["alerts"] == []
    central.wait_for(r"weather alert at Alicante Centro \(Alicante\) over: CP1 back in service")

    # EV_W's token opens nothing else; no token is refused with 401 and recorded.
    stop = urllib.request.Request(f"http://127.0.0.1:{http_port}/api/v1/cps/CP1/stop", method="POST", data=b"{}",
                                  headers={"Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(stop, timeout=5)
    assert refused.value.code == 403
    anonymous = urllib.request.Request(f"http://127.0.0.1:{http_port}/api/v1/weather/alerts", method="POST",
                                       data=json.dumps({"location": LOCATION}).encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=5)
    assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"].startswith("Bearer")
    central.wait_for(r"weather call POST /api/v1/weather/alerts from 127\.0\.0\.1:\d+ refused \(401")
    assert cp1(http_port)["state"] == "ACTIVADO"
    assert TOKEN not in central.output() and TOKEN not in evw.output()
