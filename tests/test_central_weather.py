"""
Central's side of EV_W's contract (docs/weather.md): the weather alerts'
rules on fake links, the store and a task.Clock; EV_W's calls through the
real twisted.web site on in-memory transports (tokens, bodies, refusals);
EV_W's health and the stale rule; the evcentral options.
"""

from __future__ import annotations

import json
import os

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python import usage

from evnet.central.states import CpState
from evnet.central.tap import Options
from evnet.central.weather import BadBody, parse_alert, parse_health
from evnet.central.web import EventHub, make_site
from evnet.protocols import messages as m

from tests.test_central import World
from tests.test_web import Response, dechunk, parse_events

ADMIN = "admin-token-1"
EVW = "evw-token-2"
ALERTS = "/api/v1/weather/alerts"


def alert_at(w, location="Centro", city="Alicante", temperature=-1.5, observed_at=1000.0):
    return w.central.weather.raise_alert(location, city, temperature, observed_at)


def heartbeat(at=1.0, interval=4.0, cities=2, failing=()):
    return parse_health({"at": at, "interval": interval, "cities": cities, "failing": list(failing)})


def weather_events(w):
    return [detail for kind, _, detail in w.store.events if kind == "weather"]


# -- the rules -------------------------------------------------------------------------


def test_an_alert_takes_every_cp_of_its_location_out_of_service_and_its_end_brings_them_back():
    w = World()
    cp1, cp2, other = w.cp("CP1", "Centro"), w.cp("CP2", "Centro"), w.cp("CP3", "Playa")
    for peer in (cp1, cp2, other):
        peer.take()
    assert alert_at(w) == ["CP1", "CP2"]
    for cp_id in ("CP1", "CP2"):
        cp = w.central.cps[cp_id]
        assert cp.state is CpState.PARADO and cp.machine.weather_alert and not cp.machine.stopped
        shown = cp.as_dict()
        assert (shown["state"], shown["weather_alert"], shown["stopped"]) == ("PARADO", True, False)
        assert not cp.available
    assert cp1.take() == [m.Parar("CP1")] and cp2.take() == [m.Parar("CP2")]
    assert w.state("CP3") is CpState.ACTIVADO and other.take() == []
    assert w.store.cps["CP1"]["state"] == "PARADO" and w.store.cps["CP1"]["stopped"] == 0
    assert weather_events(w) == ["weather alert at Centro (Alicante, -1.5 °C): CP1, CP2 out of service"]

    assert w.central.weather.clear_alert("Centro") is True
    assert w.state("CP1") is CpState.ACTIVADO and w.state("CP2") is CpState.ACTIVADO
    assert not w.central.cps["CP1"].machine.weather_alert
    assert cp1.take() == [m.Reanudar("CP1")] and cp2.take() == [m.Reanudar("CP2")]
    assert weather_events(w)[-1] == "weather alert at Centro (Alicante) over: CP1, CP2 back in service"
    assert w.central.weather.clear_alert("Centro") is False  # idempotent
    assert w.store.weather_alerts == {}


def test_a_second_alert_on_a_location_updates_it_and_is_not_a_second_alert():
    w = World()
    cp = w.cp()
    alert_at(w, temperature=-1.5, observed_at=1000.0)
    w.clock.advance(5)
    cp.take()
    assert alert_at(w, temperature=-3.0, observed_at=1005.0) == ["CP1"]
    assert cp.take() == []  # no second PARAR
    [alert] = w.central.weather.view()["alerts"]
    assert (alert["temperature"], alert["observed_at"], alert["raised_at"], alert["updated_at"]) == (
        -3.0, 1005.0, 0.0, 5.0)
    assert len(weather_events(w)) == 1
    assert w.store.weather_alerts["Centro"]["temperature"] == -3.0
    assert w.store.weather_alerts["Centro"]["raised_at"] == 0.0


def test_a_charge_in_progress_ends_with_its_ticket_and_the_driver_is_told():
    w = World()
    cp, driver, sid = w.charging()
    cp.send(m.Telem("CP1", sid, 1, 0.25, 9, 0.08, 1))
    alert_at(w)
    got = [x for x in driver.take() if not isinstance(x, m.Telem)]
    assert isinstance(got[0], m.Notice) and "weather alert" in got[0].text
    assert got[1] == m.Ticket(sid, 0.25, 0.08, 1, "CP1", "D1", "weather alert")
    assert w.store.sessions[sid]["end_reason"] == "weather alert"
    sent = cp.take()
    assert m.Parar("CP1") in sent and m.Ticket(sid, 0.25, 0.08, 1, "CP1", "D1", "weather alert") in sent
    assert w.state() is CpState.PARADO and w.central.cps["CP1"].session is None


def test_a_driver_asking_is_denied_with_the_weather_reason():
    w = World()
    w.cp()
    driver = w.driver()
    driver.take()
    alert_at(w)
    driver.send(m.Req("D1", "CP1"))
    [denied] = driver.take(m.Denied)
    assert denied.reason == "CP CP1 is out of service: weather alert"
    assert "CP1" not in [c.cp_id for c in w.central.available_cps()]


def test_the_operators_stop_and_the_alert_are_two_facts():
    w = World()
    cp = w.cp()
    cp.take()
    alert_at(w)
    assert cp.take() == [m.Parar("CP1")]
    # Stopped by the operator during the alert: stays out of service once the alert is over.
    assert w.central.stop_cp("CP1") == (True, "CP CP1 stopped")
    assert cp.take() == []  # already told PARAR
    w.central.weather.clear_alert("Centro")
    assert w.state() is CpState.PARADO and w.central.cps["CP1"].machine.stopped
    assert cp.take() == []
    assert weather_events(w)[-1] == "weather alert at Centro (Alicante) over: CP1 still stopped by the operator"
    assert w.central.resume_cp("CP1")[0] and w.state() is CpState.ACTIVADO
    assert cp.take() == [m.Reanudar("CP1")]


def test_an_operators_resume_during_an_alert_does_not_bring_the_cp_into_service():
    w = World()
    cp = w.cp()
    w.central.stop_cp("CP1")
    alert_at(w)
    cp.take()
    ok, text = w.central.resume_cp("CP1")
    assert ok and "stays out of service while the weather alert lasts" in text
    assert w.state() is CpState.PARADO and not w.central.cps["CP1"].machine.stopped
    assert cp.take() == []  # no REANUDAR while the alert holds it
    w.central.weather.clear_alert("Centro")
    assert w.state() is CpState.ACTIVADO and cp.take() == [m.Reanudar("CP1")]


def test_a_disconnected_cp_under_an_alert_logs_in_out_of_service():
    w = World()
    w.cp().lose()
    alert_at(w)
    assert w.state() is CpState.DESCONECTADO and w.central.cps["CP1"].machine.weather_alert
    again = w.monitor()
    assert again.login().state == "PARADO"
    assert again.take() == [m.Parar("CP1")]
    w.central.weather.clear_alert("Centro")
    assert w.state() is CpState.ACTIVADO and again.take() == [m.Reanudar("CP1")]


def test_a_fault_under_an_alert_comes_back_averiado_once_the_alert_is_over():
    w = World()
    cp = w.cp()
    alert_at(w)
    cp.send(m.Avr("CP1", "engine KO"))
    assert w.state() is CpState.PARADO
    w.central.weather.clear_alert("Centro")
    assert w.state() is CpState.AVERIADO


def test_a_cp_registering_at_an_alerted_location_is_out_of_service_and_one_moving_away_comes_back():
    w = World()
    alert_at(w, "Playa")
    assert weather_events(w) == ["weather alert at Playa (Alicante, -1.5 °C): no CP there"]
    peer = w.cp("CP1", "Playa")
    assert w.state() is CpState.PARADO and w.central.cps["CP1"].machine.weather_alert
    assert m.Parar("CP1") in peer.take()
    assert w.central.weather.view()["alerts"][0]["cps"] == ["CP1"]
    peer.lose()
    w.cp("CP1", "Centro")  # registered again elsewhere
    assert w.state() is CpState.ACTIVADO and not w.central.cps["CP1"].machine.weather_alert


def test_alerts_survive_a_restart_of_central():
    w = World()
    w.cp()
    alert_at(w, temperature=-2.0)
    store = w.store
    w.service.stopService()
    again = World(store=store)
    cp = again.central.cps["CP1"]
    assert cp.machine.weather_alert and again.central.weather.covers("Centro")
    peer = again.monitor()
    assert peer.login().state == "PARADO"
    assert peer.take() == [m.Parar("CP1")]
    assert again.central.weather.view()["alerts"][0]["temperature"] == -2.0
    again.central.weather.clear_alert("Centro")
    assert again.state() is CpState.ACTIVADO
    third = World(store=store)
    assert not third.central.weather.covers("Centro")


# -- EV_W's health and the stale rule (Central's clock) ------------------------------------


def test_before_a_first_heartbeat_evw_is_not_heard_from_and_that_is_no_failure():
    w = World()
    w.clock.advance(100)
    health = w.central.weather.view()["health"]
    assert health["state"] == "not heard from" and health["last_heartbeat"] is None
    assert weather_events(w) == []


def test_evw_is_unhealthy_after_three_missed_heartbeats_and_healthy_at_the_next():
    w = World()
    w.clock.advance(10)
    w.central.weather.took_heartbeat(heartbeat(interval=4.0, failing=["Elche"]))
    health = w.central.weather.view()["health"]
    assert (health["state"], health["last_heartbeat"], health["failing"], health["unhealthy_after"]) == (
        "healthy", 10.0, ["Elche"], 12.0)
    w.clock.advance(12)
    assert w.central.weather.view()["health"]["state"] == "healthy"  # 12 s: not yet more than 3 x 4 s
    w.clock.advance(1)
    health = w.central.weather.view()["health"]
    assert health["state"] == "unhealthy" and health["silent_for"] == 13.0
    assert weather_events(w) == ["EV_W unhealthy: no heartbeat for 12 s (3 missed)"]
    w.clock.advance(5)
    assert len(weather_events(w)) == 1  # told once
    w.central.weather.took_heartbeat(heartbeat(interval=4.0))
    assert w.central.weather.view()["health"]["state"] == "healthy"
    assert weather_events(w)[-1] == "EV_W is heard again: healthy"


def test_after_weather_stale_of_silence_central_clears_every_alert_itself():
    w = World(weather_stale=600.0)
    w.cp("CP1", "Centro")
    w.cp("CP2", "Playa")
    w.central.stop_cp("CP2")
    w.central.weather.took_heartbeat(heartbeat())
    alert_at(w, "Centro")
    alert_at(w, "Playa")
    w.clock.advance(599)
    assert w.central.weather.covers("Centro")
    w.clock.advance(1)
    assert w.central.weather.view()["alerts"] == [] and w.store.weather_alerts == {}
    # (the CPs' Monitors fell silent too: they are DESCONECTADO by now, with their facts)
    assert not w.central.cps["CP1"].machine.out_of_service
    assert w.central.cps["CP2"].machine.stopped and not w.central.cps["CP2"].machine.weather_alert
    assert "EV_W silent for 10 min: weather alerts cleared" in weather_events(w)
    assert ("weather alert at Centro (Alicante) over (EV_W silent for 10 min): CP1 back in service"
            in weather_events(w))


def test_evw_calls_keep_the_stale_clock_from_running_out():
    w = World(weather_stale=60.0)
    w.cp()
    alert_at(w)
    for _ in range(10):
        w.clock.advance(30)
        w.central.weather.took_heartbeat(heartbeat())
    assert w.central.weather.covers("Centro")


def test_after_a_restart_the_stale_clock_starts_again_and_evw_is_not_heard_from():
    w = World(weather_stale=60.0)
    w.cp()
    w.central.weather.took_heartbeat(heartbeat())
    alert_at(w)
    w.clock.advance(50)
    store = w.store
    w.service.stopService()
    again = World(store=store, weather_stale=60.0)
    assert again.central.weather.view()["health"]["state"] == "not heard from"
    again.clock.advance(59)
    assert again.central.weather.covers("Centro")
    again.clock.advance(1)
    assert not again.central.weather.covers("Centro")


# -- the bodies ------------------------------------------------------------------------------


GOOD_ALERT = {"location": "Alicante Centro", "city": "Alicante", "temperature": -1.5, "observed_at": 1764620000.0}


@pytest.mark.parametrize("change, why", [
    ({"location": ""}, "'location' must be a non-empty string"),
    ({"location": 5}, "'location' must be a non-empty string"),
    ({"location": " Centro"}, "without surrounding spaces"),
    ({"location": "x" * 256}, "longer than 255"),
    ({"city": None}, "'city' must be a non-empty string"),
    ({"city": "a\nb"}, "printable"),
    ({"temperature": "cold"}, "'temperature' must be a number"),
    ({"temperature": True}, "'temperature' must be a number"),
    ({"observed_at": None}, "'observed_at' must be a number"),
])
def test_an_alert_body_not_of_the_contracts_shape_says_why(change, why):
    with pytest.raises(BadBody, match=why):
        parse_alert({**GOOD_ALERT, **change})


def test_the_bodies_of_the_contract_are_read():
    assert parse_alert(GOOD_ALERT) == ("Alicante Centro", "Alicante", -1.5, 1764620000.0)
    assert parse_alert({**GOOD_ALERT, "temperature": -2}) [2] == -2.0
    hb = parse_health({"at": 1764620004.0, "interval": 4.0, "cities": 3, "failing": ["Elche"]})
    assert (hb.at, hb.interval, hb.cities, hb.failing) == (1764620004.0, 4.0, 3, ["Elche"])
    for bad in ([], {"at": 1, "interval": 0, "cities": 1}, {"at": 1, "interval": 4, "cities": -1},
                {"at": 1, "interval": 4, "cities": 1, "failing": "Elche"},
                {"at": 1, "interval": 4, "cities": 1, "failing": [3]}):
        with pytest.raises(BadBody):
            parse_health(bad)


# -- the HTTP calls -------------------------------------------------------------------------------


class WeatherWeb:
    """A Central (World) with its panel on in-memory HTTP connections, with an admin token and EV_W's."""

    def __init__(self, weather_token=EVW, **world):
        self.world = World(**world)
        self.central, self.clock = self.world.central, self.world.clock
        self.hub = EventHub(self.central, self.clock)
        self.hub.startService()
        self.site = make_site(self.central, self.hub, self.clock, ADMIN, weather_token)

    def call(self, method, path, body=None, token=EVW, host="10.0.0.9", raw=None):
        peer = IPv4Address("TCP", host, 50001)
        channel = self.site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
        channel.makeConnection(transport)
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode("utf-8"))
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1:8080", f"Content-Length: {len(data)}"]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + data)
        return Response(transport.value())

    def refusals(self):
        return [(subject, detail) for kind, subject, detail in self.world.store.events if kind == "weather-refused"]


def test_evw_raises_clears_and_beats_through_the_api():
    web = WeatherWeb()
    web.world.cp("CP1", "Alicante Centro")
    answer = web.call("POST", ALERTS, GOOD_ALERT)
    assert answer.status == 200 and answer.json() == {"ok": True, "location": "Alicante Centro", "cps": ["CP1"]}
    assert web.world.state() is CpState.PARADO
    assert web.call("GET", "/api/v1/cps/CP1", token=None).json()["weather_alert"] is True
    answer = web.call("PUT", "/api/v1/weather/health", {"at": 5.0, "interval": 0.5, "cities": 1, "failing": []})
    assert answer.status == 200 and answer.json() == {"ok": True}
    view = web.call("GET", "/api/v1/weather", token=None).json()
    assert [a["location"] for a in view["alerts"]] == ["Alicante Centro"]
    assert view["alerts"][0]["city"] == "Alicante" and view["alerts"][0]["cps"] == ["CP1"]
    assert view["health"]["state"] == "healthy" and view["health"]["interval"] == 0.5
    assert view["stale_after"] == 600.0
    answer = web.call("DELETE", f"{ALERTS}/Alicante%20Centro")
    assert answer.status == 200 and answer.json() == {"ok": True, "cleared": True}
    assert web.world.state() is CpState.ACTIVADO
    assert web.call("DELETE", f"{ALERTS}/Alicante%20Centro").json() == {"ok": True, "cleared": False}
    assert web.call("DELETE", f"{ALERTS}/a%2Fb%20c").json() == {"ok": True, "cleared": False}  # "/" in a name
    assert web.refusals() == []


def test_the_panel_stream_tells_weather_changes():
    web = WeatherWeb()
    peer = IPv4Address("TCP", "127.0.0.1", 50002)
    channel = web.site.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    web.call("POST", ALERTS, GOOD_ALERT)
    events = parse_events(dechunk(transport.value().partition(b"\r\n\r\n")[2]))
    snapshot = [d for name, d in events if name == "snapshot"][0]
    assert snapshot["weather"]["health"]["state"] == "not heard from" and snapshot["weather"]["alerts"] == []
    weather = [d for name, d in events if name == "weather"]
    assert weather[-1]["weather"]["alerts"][0]["location"] == "Alicante Centro"


@pytest.mark.parametrize("token, status", [(None, 401), ("wrong", 401), (ADMIN, 403)])
def test_a_weather_call_without_evws_token_is_refused_and_recorded(token, status):
    web = WeatherWeb()
    web.world.cp("CP1", "Alicante Centro")
    for method, path, body in (("POST", ALERTS, GOOD_ALERT), ("DELETE", f"{ALERTS}/Alicante%20Centro", None),
                               ("PUT", "/api/v1/weather/health", {"at": 1, "interval": 4, "cities": 1})):
        web.clock.advance(61)  # each its own refusal row (not a summary)
        answer = web.call(method, path, body, token=token)
        assert answer.status == status and answer.json()["error"]
        if status == 401:
            assert answer.headers["www-authenticate"].startswith("Bearer")
    assert not web.central.weather.view()["alerts"] and not web.central.cps["CP1"].machine.weather_alert
    assert web.central.weather.view()["health"]["state"] == "not heard from"
    refused = web.refusals()
    assert len(refused) == 3 and all(subject == "10.0.0.9" for subject, _ in refused)
    assert refused[0][1].startswith(f"weather call POST {ALERTS} from 10.0.0.9:50001 refused ({status}: ")
    assert all(token is None or token not in detail for _, detail in refused)  # no token written down


def test_without_a_weather_token_file_every_weather_call_is_401():
    web = WeatherWeb(weather_token=None)
    answer = web.call("POST", ALERTS, GOOD_ALERT, token=EVW)
    assert answer.status == 401 and "no --weather-token-file" in answer.json()["error"]
    assert web.call("POST", ALERTS, GOOD_ALERT, token=ADMIN).status == 403


def test_evws_token_opens_nothing_else():
    web = WeatherWeb()
    web.world.cp()
    answer = web.call("POST", "/api/v1/cps/CP1/stop", token=EVW, host="127.0.0.1")
    assert answer.status == 403 and "weather calls only" in answer.json()["error"]
    assert web.world.state() is CpState.ACTIVADO
    assert web.call("POST", "/api/v1/cps/CP1/stop", token=ADMIN).status == 200


@pytest.mark.parametrize("raw, why", [
    (b"", "the body must be JSON"),
    (b"{not json", "the body must be JSON"),
    (b"\xff\xfe", "the body must be JSON"),
    (b"[1, 2]", "the body must be a JSON object"),
    (json.dumps({**GOOD_ALERT, "temperature": "cold"}).encode(), "'temperature' must be a number"),
    (b" " * (16 * 1024 + 1), "larger than"),
])
def test_a_bad_alert_body_is_400_and_recorded(raw, why):
    web = WeatherWeb()
    answer = web.call("POST", ALERTS, raw=raw)
    assert answer.status == 400 and why in answer.json()["error"]
    assert web.central.weather.view()["alerts"] == []
    [(subject, detail)] = web.refusals()
    assert subject == "10.0.0.9" and why in detail


def test_a_bad_heartbeat_is_400():
    web = WeatherWeb()
    answer = web.call("PUT", "/api/v1/weather/health", {"at": 1, "interval": -4, "cities": 1})
    assert answer.status == 400 and "'interval'" in answer.json()["error"]
    assert web.central.weather.view()["health"]["state"] == "not heard from"


def test_a_flood_of_refused_calls_is_one_row_and_a_count():
    web = WeatherWeb()
    for _ in range(50):
        assert web.call("POST", ALERTS, GOOD_ALERT, token="guess").status == 401
    assert len(web.refusals()) == 1
    web.clock.advance(61)  # the service's sweep writes the summary once the window is over
    [first, summary] = web.refusals()
    assert summary[1].startswith("49 more like this within 60 s: weather call POST")


# -- the evcentral options --------------------------------------------------------------------------


def test_weather_options(tmp_path):
    options = Options()
    options.parseOptions([])
    assert options["weather_token"] is None and options["weather-stale"] == 600.0
    token_file = tmp_path / "evw-token"
    token_file.write_text(f"{EVW}\n")
    os.chmod(token_file, 0o600)
    with capturedLogs() as events:
        options = Options()
        options.parseOptions(["--weather-token-file", str(token_file), "--weather-stale", "30"])
    assert options["weather_token"] == EVW and options["weather-stale"] == 30.0
    assert not [e for e in events if e["log_level"] >= LogLevel.warn]
    assert "every weather call is refused (401)" in " ".join(Options().getUsage().split())


def test_a_weather_token_file_others_may_read_is_one_warning_without_the_token(tmp_path):
    token_file = tmp_path / "evw-token"
    token_file.write_text(EVW)
    os.chmod(token_file, 0o644)
    with capturedLogs() as events:
        Options().parseOptions(["--weather-token-file", str(token_file)])
    [warning] = [formatEvent(e) for e in events if e["log_level"] >= LogLevel.warn]
    assert "others may read this file (mode 0644); chmod 600 it" in warning and EVW not in warning


@pytest.mark.parametrize("args, message", [
    (["--weather-stale", "0"], "--weather-stale must be a number of seconds, at least 1"),
    (["--weather-stale", "soon"], "--weather-stale must be a number of seconds"),
    (["--weather-token-file", "/nonexistent/evw"], "--weather-token-file /nonexistent/evw: cannot read it"),
])
def test_bad_weather_options_are_one_line(args, message):
    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions(args)


def test_evws_token_must_not_be_the_admin_token(tmp_path):
    same = tmp_path / "same"
    same.write_text(ADMIN)
    os.chmod(same, 0o600)
    with pytest.raises(usage.UsageError, match="must not be the admin token"):
        Options().parseOptions(["--admin-token-file", str(same), "--weather-token-file", str(same)])



def test_alerts_clears_and_the_stale_rule_are_in_the_audit_trail():
    from tests.test_audit import central_rows

    w = World()
    w.cp("CP1", "Centro").take()
    w.central.weather.raise_alert("Centro", "Alicante", -1.5, 1000.0, source="10.0.0.9:5555")
    w.central.weather.clear_alert("Centro", source="10.0.0.9:5556")
    w.central.weather.raise_alert("Centro", "Alicante", -2.0, 1001.0)
    w.clock.advance(w.central.weather.stale + 1)
    w.central.weather.check()
    w.clock.advance(5)
    (raised, again) = central_rows(w, "weather.alert")
    assert (raised["actor_kind"], raised["actor_id"], raised["address"]) == ("weather", "EV_W", "10.0.0.9")
    assert raised["detail"]["cps"] == ["CP1"] and raised["detail"]["temperature"] == -1.5
    (cleared,) = central_rows(w, "weather.clear")
    assert cleared["detail"]["back"] == ["CP1"] and cleared["port"] == 5556
    (stale,) = central_rows(w, "weather.stale-clear")
    assert stale["detail"]["location"] == "Centro"
