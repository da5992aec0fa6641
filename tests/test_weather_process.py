"""
``twistd -n evweather`` as a real process, on the local weather source, with
a fake Central (an HTTP server in this test process): a city freezing
brings the POST of its alert, thawing the DELETE; the operator's cities
survive a restart; a taken control port is one line.
"""

from __future__ import annotations

import os
import re
import socket

import pytest

from tests.network import eventually
from tests.procs import free_port
from tests.weatherfakes import FakeCentralServer

pytestmark = pytest.mark.slow

TOKEN = "ev-w-token-5f3a9c"


def write_atomically(path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def central():
    fake = FakeCentralServer(["Alicante Centro", "Elche"], token=TOKEN)
    yield fake
    fake.close()


def start(procs, tmp_path, central, control: int):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    (tmp_path / "locations.txt").write_text("Alicante Centro = Alicante\n")
    return procs.twistd(
        "evweather", "evweather", "--central", central.url, "--central-token-file", str(token),
        "--locations-file", str(tmp_path / "locations.txt"), "--local-weather", str(tmp_path / "weather.txt"),
        "--interval", "0.5", "--control", f"tcp:{control}:interface=127.0.0.1", "--state-dir", str(tmp_path / "state"),
    )


def evctl(procs, *args: str) -> str:
    proc = procs.command("evctl", "evctl", "weather", *args)
    assert proc.wait(30) == 0, proc.output()
    proc.stop()
    return proc.output()


def test_a_city_freezing_brings_the_post_and_thawing_the_delete(procs, tmp_path, central):
    weather = tmp_path / "weather.txt"
    write_atomically(weather, "Alicante = 5\nElche = 9\n")
    control = free_port()
    proc = start(procs, tmp_path, central, control)
    context = lambda: proc.output()[-4000:]  # noqa: E731
    eventually(lambda: central.seen("PUT"), 20, "a heartbeat", context)
    beat = central.seen("PUT")[-1]
    assert beat["path"] == "/api/v1/weather/health" and beat["auth"] == f"Bearer {TOKEN}"
    eventually(lambda: central.seen("PUT")[-1]["body"]["cities"] == 2, 10, "two cities in the heartbeat", context)
    assert central.seen("POST") == [] and central.seen("DELETE") == []

    write_atomically(weather, "Alicante = -2.5\nElche = 9\n")  # Alicante freezes
    [post] = eventually(lambda: central.seen("POST"), 10, "the alert's POST", context)
    assert post["path"] == "/api/v1/weather/alerts" and post["auth"] == f"Bearer {TOKEN}"
    assert {k: post["body"][k] for k in ("location", "city", "temperature")} == {
        "location": "Alicante Centro", "city": "Alicante", "temperature": -2.5}
    proc.wait_for(r"Central took the frost alert for Alicante Centro \(-2.5 °C in Alicante\)")

    write_atomically(weather, "Alicante = 1\nElche = 9\n")  # and thaws
    [delete] = eventually(lambda: central.seen("DELETE"), 10, "the alert's DELETE", context)
    assert delete["path"] == "/api/v1/weather/alerts/Alicante%20Centro" and delete["auth"] == f"Bearer {TOKEN}"
    proc.wait_for(r"Central cleared the frost alert for Alicante Centro")
    assert len(central.seen("POST")) == 1  # only the changes
    assert TOKEN not in proc.output()

    assert evctl(procs, "add", str(control), "Teruel").strip() == "EV_W watches Teruel"
    proc.wait_for(r"EV_W cannot read the weather for Teruel: the local weather file .* has no line for Teruel")
    mark = proc.mark()
    eventually(lambda: len(central.seen("PUT")) > 10 and central.seen("PUT")[-1]["body"]["failing"] == ["Teruel"],
               10, "Teruel failing in the heartbeat", context)
    assert proc.count(r"cannot read the weather for Teruel") == 1, context()  # once, not every poll
    assert proc.mark() >= mark

    proc.stop()
    assert proc.output().endswith("Server Shut Down."), context()  # a clean stop on SIGTERM
    proc = start(procs, tmp_path, central, control)
    proc.wait_for(r"EV_W watches .*Teruel", timeout=20)
    listed = evctl(procs, "list", str(control))
    assert re.search(r"^Teruel: UNKNOWN, no reading yet \(added\)", listed, re.M), listed


def test_a_taken_control_port_is_one_line_and_exit_status_1(procs, tmp_path, central):
    write_atomically(tmp_path / "weather.txt", "Alicante = 5\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = start(procs, tmp_path, central, port)
        assert proc.wait(30) == 1, proc.output()
    lines = [line for line in proc.output().splitlines() if "cannot listen" in line or "Traceback" in line]
    assert len(lines) == 1 and lines[0].endswith(
        f"cannot listen on --control tcp:{port}:interface=127.0.0.1: address already in use"), proc.output()
