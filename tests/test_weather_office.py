"""EV_W's office on a task.Clock: the cities, the weather machine, the alerts to Central, failures."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent

from evnet.weather.alerts import Alert, Weather, WEATHER_TABLE, Reading, weather_machine
from evnet.weather.central import CentralError
from evnet.weather.office import CommandError, WeatherOffice
from evnet.weather.sources import WeatherError
from evnet.weather.state import Saved, StateFile
from tests.weatherfakes import FakeCentral, FakeSource

MAPPING = {"Alicante Centro": "Alicante", "Alicante Puerto": "Alicante"}


def steady(attempt: int) -> float:
    return 4.0 * 2 ** attempt


def office(source, central, tmp_path, saved=None, **kwargs):
    clock = Clock()
    clock.advance(1_764_620_000)
    kwargs.setdefault("read_backoff", steady)
    kwargs.setdefault("send_backoff", lambda attempt: 2.0 ** attempt)
    o = WeatherOffice(source, central, clock, StateFile(str(tmp_path)), mapping=MAPPING, saved=saved, **kwargs)
    return o, clock


def polls(clock, n, interval=4.0):
    for _ in range(n):
        clock.advance(interval)


def lines(events, level=LogLevel.warn):
    return [formatEvent(e) for e in events if e["log_level"] >= level]


def test_the_table_never_moves_an_alert_on_an_unreadable_reading():
    for state in Weather:
        assert WEATHER_TABLE[(state, Reading.UNREADABLE)] is state
    m = weather_machine("Alicante")
    m.fire(Reading.COLD)
    assert m.state is Weather.FROST and m.changed
    m.fire(Reading.UNREADABLE)
    assert m.state is Weather.FROST and not m.changed


def test_the_cities_are_the_mapped_locations_of_centrals_cps_then_the_ones_added(tmp_path):
    central = FakeCentral("Alicante Centro", "Alicante Puerto", "Elche")
    source = FakeSource(Alicante=10, Elche=12, Madrid=8)
    o, clock = office(source, central, tmp_path, saved=Saved(cities=["Madrid"]))
    o.startService()
    assert o.watched() == ["Alicante", "Elche", "Madrid"]
    assert sorted(source.asked) == ["Alicante", "Elche", "Madrid"]  # each read once, at once
    assert [r["locations"] for r in o.rows()] == [["Alicante Centro", "Alicante Puerto"], ["Elche"], []]
    polls(clock, 1)
    assert sorted(source.asked) == sorted(["Alicante", "Elche", "Madrid"] * 2)


def test_a_frost_raises_one_alert_per_location_and_a_thaw_clears_them_only_changes_are_sent(tmp_path):
    central = FakeCentral("Alicante Centro", "Alicante Puerto", "Elche")
    source = FakeSource(Alicante=2.0, Elche=12)
    o, clock = office(source, central, tmp_path, refresh_every=1000)
    o.startService()
    assert central.sent() == []  # mild from the start: nothing to tell
    source.temperatures["Alicante"] = -1.5
    with capturedLogs() as events:
        polls(clock, 1)
    assert central.sent() == [("POST", "Alicante Centro"), ("POST", "Alicante Puerto")]
    [(_, alert), _] = [c for c in central.calls if c[0] == "POST"]
    assert alert == Alert("Alicante Centro", "Alicante", -1.5, clock.seconds())
    assert "frost in Alicante: -1.5 °C, below 0 °C: alert for Alicante Centro, Alicante Puerto" in lines(events)
    central.forget()
    source.temperatures["Alicante"] = -3.0
    polls(clock, 5)
    assert central.sent() == []  # still frozen: no change to send
    source.temperatures["Alicante"] = 0.0  # at the threshold: no frost
    polls(clock, 1)
    assert central.sent() == [("DELETE", "Alicante Centro"), ("DELETE", "Alicante Puerto")]
    assert o.outbox.taken == {}


def test_the_threshold_is_an_option(tmp_path):
    central, source = FakeCentral("Elche"), FakeSource(Elche=1.5)
    o, clock = office(source, central, tmp_path, threshold=2.0)
    o.startService()
    assert central.sent() == [("POST", "Elche")]


def test_active_alerts_are_refreshed_every_n_polls(tmp_path):
    central, source = FakeCentral("Elche"), FakeSource(Elche=-1)
    o, clock = office(source, central, tmp_path, refresh_every=3)
    o.startService()  # poll 1
    assert central.sent() == [("POST", "Elche")]
    polls(clock, 1)  # poll 2
    assert central.sent() == [("POST", "Elche")]
    polls(clock, 1)  # poll 3: the refresh
    assert central.sent() == [("POST", "Elche")] * 2
    polls(clock, 3)
    assert central.sent() == [("POST", "Elche")] * 3


def test_each_poll_sends_a_heartbeat(tmp_path):
    central = FakeCentral("Elche")
    source = FakeSource(Elche=5, Nowhere=WeatherError("OpenWeather does not know this city (404: city not found)"))
    o, clock = office(source, central, tmp_path, saved=Saved(cities=["Nowhere"]))
    o.startService()
    polls(clock, 2)
    beats = [body for method, body in central.calls if method == "PUT"]
    assert len(beats) == 3
    assert beats[-1] == {"at": clock.seconds(), "interval": 4.0, "cities": 2, "failing": ["Nowhere"]}


@pytest.mark.parametrize("start", [-2.0, 5.0, None])
def test_a_failing_source_never_raises_or_clears_an_alert_and_is_told_once(tmp_path, start):
    central = FakeCentral("Elche")
    source = FakeSource(Elche=start if start is not None else WeatherError("x"))
    o, clock = office(source, central, tmp_path, read_backoff=lambda attempt: 4.0)
    o.startService()
    before = o.machines["Elche"].state
    sent = list(central.sent())
    why = "no answer from OpenWeather at https://api.openweathermap.org within 5 s"
    source.temperatures["Elche"] = WeatherError(why)
    with capturedLogs() as events:
        polls(clock, 10)
    assert o.machines["Elche"].state is before
    assert central.sent() == sent  # nothing raised, nothing cleared
    told = [line for line in lines(events) if "cannot read" in line]
    assert told == [f"EV_W cannot read the weather for Elche: {why} (retrying; Elche stays {before.value})"]
    assert o.failing == {"Elche": why}
    other = "OpenWeather answered 502 (no message)"
    source.temperatures["Elche"] = WeatherError(other)
    with capturedLogs() as events:
        polls(clock, 3)
    assert [line for line in lines(events) if "cannot read" in line] == [
        f"EV_W cannot read the weather for Elche: {other} (retrying; Elche stays {before.value})"]
    source.temperatures["Elche"] = 7
    with capturedLogs() as events:
        polls(clock, 1)
    assert "EV_W reads the weather for Elche again: 7.0 °C" in lines(events, LogLevel.info)
    assert o.failing == {}


def test_a_failing_city_is_retried_with_a_growing_backoff_and_reset_when_it_answers(tmp_path):
    central, source = FakeCentral("Elche"), FakeSource(Elche=WeatherError("down"))
    o, clock = office(source, central, tmp_path)  # backoff 4, 8, 16, 32... s after each failure
    o.startService()  # t=0: read, fails
    times = []
    for _ in range(16):  # 64 s
        n = len(source.asked)
        clock.advance(4)
        if len(source.asked) > n:
            times.append(clock.seconds() - 1_764_620_000)
    assert times == [4, 12, 28, 60]
    source.temperatures["Elche"] = 3
    polls(clock, 16)  # the next try comes at 124 s, then every poll again
    assert len(source.asked) == 6 + 1  # 124 s, 128 s
    n = len(source.asked)
    polls(clock, 2)
    assert len(source.asked) == n + 2


def test_a_rate_limit_is_honoured_retry_after(tmp_path):
    central = FakeCentral("Elche")
    source = FakeSource(Elche=WeatherError("OpenWeather limits the requests (429: too many requests)", retry_after=60))
    o, clock = office(source, central, tmp_path)
    o.startService()
    polls(clock, 14)  # 56 s
    assert source.asked == ["Elche"]
    polls(clock, 1)
    assert source.asked == ["Elche", "Elche"]


def test_a_read_still_on_its_way_is_not_asked_again(tmp_path):
    central, source = FakeCentral("Elche"), FakeSource(Elche=None)
    o, clock = office(source, central, tmp_path)
    o.startService()
    polls(clock, 3)
    assert source.asked == ["Elche"]
    city, d = source.held.pop()
    d.callback(-4.0)
    assert central.sent() == [("POST", "Elche")]


def test_a_send_that_fails_is_retried_with_backoff_until_central_takes_it_told_once(tmp_path):
    central, source = FakeCentral("Elche"), FakeSource(Elche=-1)
    central.refuse["POST"] = CentralError("Central refuses EV_W's token (401: this needs EV_W's token)", 401)
    o, clock = office(source, central, tmp_path, refresh_every=1000)
    with capturedLogs() as events:
        o.startService()
        for _ in range(30):
            clock.advance(1)
    posts = [t for t in central.sent() if t[0] == "POST"]
    assert 4 <= len(posts) <= 6  # 1, 2, 4, 8, 16 s apart: not every poll
    assert lines(events) .count(
        "EV_W cannot tell Central: Central refuses EV_W's token (401: this needs EV_W's token) (retrying)") == 1
    assert o.outbox.taken == {} and o.outbox.pending == {"Elche"}
    del central.refuse["POST"]
    with capturedLogs() as events:
        clock.advance(32)
    assert o.outbox.taken.keys() == {"Elche"} and o.outbox.pending == set()
    assert "Central takes EV_W's calls again" in lines(events, LogLevel.info)


def test_central_unreachable_keeps_the_cities_it_told_and_is_one_line(tmp_path):
    central, source = FakeCentral("Elche"), FakeSource(Elche=4)
    o, clock = office(source, central, tmp_path)
    o.startService()
    down = CentralError("cannot connect to Central at http://127.0.0.1:8080: connection refused")
    central.refuse.update(GET=down, PUT=down)
    with capturedLogs() as events:
        polls(clock, 5)
    assert o.watched() == ["Elche"]
    assert lines(events) == ["EV_W cannot tell Central: cannot connect to Central at http://127.0.0.1:8080: "
                             "connection refused (retrying)"]


def test_an_alert_changing_while_its_send_is_on_its_way_ends_as_the_last_state(tmp_path):
    central, source = FakeCentral("Elche"), FakeSource(Elche=-1)
    central.hold = True
    o, clock = office(source, central, tmp_path)
    o.startService()
    source.temperatures["Elche"] = 5
    polls(clock, 1)  # thawed while the POST waits
    assert central.sent() == [("POST", "Elche")]
    central.hold = False
    central.held.pop().callback({"ok": True})
    assert central.sent() == [("POST", "Elche"), ("DELETE", "Elche")]
    assert o.outbox.taken == {}


def test_alerts_and_added_cities_survive_a_restart_and_a_thaw_after_it_clears(tmp_path):
    central, source = FakeCentral("Alicante Centro"), FakeSource(Alicante=-2, Elche=3)
    o, clock = office(source, central, tmp_path)
    o.startService()
    assert o.add("Elche") == "EV_W watches Elche"
    o.stopService()
    saved = StateFile(str(tmp_path)).load()
    assert saved.cities == ["Elche"] and list(saved.alerts) == ["Alicante Centro"]

    central2 = FakeCentral("Alicante Centro")
    source.temperatures["Alicante"] = WeatherError("down")
    o2, clock2 = office(source, central2, tmp_path, saved=saved)
    o2.startService()
    assert o2.machines["Alicante"].state is Weather.FROST  # unknown now: the last state holds
    assert central2.sent() == []
    source.temperatures["Alicante"] = 1
    polls(clock2, 1)
    assert central2.sent() == [("DELETE", "Alicante Centro")]
    assert StateFile(str(tmp_path)).load().alerts == {}


def test_restored_alerts_wait_for_centrals_locations_and_a_location_gone_is_cleared(tmp_path):
    alert = Alert("Alicante Centro", "Alicante", -2, 1.0)
    central, source = FakeCentral(), FakeSource(Alicante=-3)
    central.refuse["GET"] = CentralError("down")
    o, clock = office(source, central, tmp_path, saved=Saved(alerts={alert.location: alert}))
    o.startService()
    polls(clock, 2)
    assert central.sent() == []  # Central has not told its CPs: the alert stands
    del central.refuse["GET"]  # and Central no longer has a CP there
    polls(clock, 1)
    assert central.sent() == [("DELETE", "Alicante Centro")]
    assert o.watched() == []


def test_the_operator_adds_lists_and_removes_cities(tmp_path):
    central, source = FakeCentral("Alicante Centro"), FakeSource(Alicante=5, Madrid=-1)
    o, clock = office(source, central, tmp_path)
    o.startService()
    assert o.add("  Madrid ") == "EV_W watches Madrid"
    assert central.sent() == [("POST", "Madrid")]  # read at once: frozen
    with pytest.raises(CommandError, match="Madrid is already on the list"):
        o.add("Madrid")
    with pytest.raises(CommandError, match="watched for Central's CPs at Alicante Centro"):
        o.remove("Alicante")
    with pytest.raises(CommandError, match="Sevilla is not on the list"):
        o.remove("Sevilla")
    with pytest.raises(CommandError, match="cannot hold"):
        o.add("Bad = name")
    assert [(r["city"], r["state"], r["alerts"]) for r in o.rows()] == [
        ("Alicante", "MILD", []), ("Madrid", "FROST", ["Madrid"])]
    assert o.remove("Madrid") == "EV_W no longer watches Madrid"
    assert central.sent() == [("POST", "Madrid"), ("DELETE", "Madrid")]  # its alert ends with it
    assert StateFile(str(tmp_path)).load().cities == []
    assert o.add("Alicante") == "EV_W watches Alicante (it was already watched for Central's CPs)"
    assert StateFile(str(tmp_path)).load().cities == ["Alicante"]


def test_stopping_sends_nothing_more(tmp_path):
    central, source = FakeCentral("Elche"), FakeSource(Elche=-1)
    central.refuse["POST"] = CentralError("down")
    o, clock = office(source, central, tmp_path)
    o.startService()
    o.stopService()
    n = len(central.calls)
    clock.advance(600)
    assert len(central.calls) == n and not clock.getDelayedCalls()
