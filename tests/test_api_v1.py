"""
API_Central v1 on an in-memory twisted.web Site (tests.test_web.Web: Central
on the MemoryStore, fake Monitors and drivers, a task.Clock): the redirects
of the old paths, the sessions' and drivers' filters and pages, the alerts
of every kind, the network's totals, and the stream's summary and alerts
events.  No global reactor, no sleeps.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet import defer

from evnet.central.alerts import CP_AUTH_WINDOW, MAX_CP_AUTH
from evnet.protocols import messages as m
from evnet.protocols.vocabulary import AVR_ENGINE_LINK_LOST
from evnet.central.web import ROUTES

from tests.fakes import verifier_of
from tests.test_web import Stream, Web, bearer

DAY = 86400.0


# -- the old paths ----------------------------------------------------------------------


@pytest.mark.parametrize("method, old, new", [
    ("GET", "/api/cps", "/api/v1/cps"),
    ("GET", "/api/cps/CP1", "/api/v1/cps/CP1"),
    ("GET", "/api/sessions?limit=2&cp=CP1", "/api/v1/sessions?limit=2&cp=CP1"),
    ("GET", "/api/stream", "/api/v1/stream"),
    ("GET", "/api/openapi.json", "/api/v1/openapi.json"),
    ("POST", "/api/cps/CP1/stop", "/api/v1/cps/CP1/stop"),
    ("POST", "/api/cps/stop", "/api/v1/cps/stop"),
    ("POST", "/api/drivers/D1/cancel", "/api/v1/drivers/D1/cancel"),
])
def test_an_old_path_is_a_308_to_its_v1_path_and_does_nothing_itself(method, old, new):
    web = Web()
    web.world.cp()
    answer = web.request(method, old)
    assert answer.status == 308 and answer.headers["location"] == new
    assert answer.json() == {"moved_to": new}
    assert web.central.cps["CP1"].state.value == "ACTIVADO"  # the POST was not run: the client sends it again


def test_an_old_path_without_a_v1_route_is_404_and_v1_paths_are_never_redirected():
    web = Web()
    assert web.get("/api/nothing").status == 404
    assert web.get("/api/v1/nothing").status == 404
    assert web.get("/api/v1").status == 404
    # A wrong method on a v1 path is 405 even through an old path's redirect target.
    assert web.request("DELETE", "/api/cps").status == 308
    assert web.request("DELETE", "/api/v1/cps").status == 405


def test_every_route_is_under_v1():
    assert all(route.template.startswith("/api/v1/") for route in ROUTES)


# -- the CPs -----------------------------------------------------------------------------


def test_a_cp_row_carries_registration_key_activation_and_weather_alert():
    web = Web()
    web.world.cp()
    cp = web.get("/api/v1/cps").json()["cps"][0]
    assert (cp["registration"], cp["key"], cp["stopped"], cp["weather_alert"], cp["available"]) == (
        "registered", "active", False, False, True)
    assert cp["key_id"] and cp["key_issued_at"] is not None
    web.post("/api/v1/cps/CP1/stop")
    cp = web.get("/api/v1/cps/CP1").json()
    assert (cp["state"], cp["stopped"], cp["available"]) == ("PARADO", True, False)


# -- sessions ------------------------------------------------------------------------------


def charges(web):
    """Four stored charges: S at t=10 (CP1, D1), t=20 (CP2, D1), t=30 (CP1, D2) closed; one open at t=40 (CP1, D1)."""
    store = web.world.store
    for sid, started, cp, driver in (("SA", 10.0, "CP1", "D1"), ("SB", 20.0, "CP2", "D1"), ("SC", 30.0, "CP1", "D2")):
        store.open_session({"id": sid, "cp_id": cp, "driver_id": driver, "origin": "driver", "price": 0.3,
                            "target_kwh": 0.0, "started_at": started})
        store.close_session(sid, started + 5, 1.0, 0.3, 5, 1, "target")
    web.clock.advance(40)
    cp, driver = web.world.cp(), web.world.driver()
    return web.world.charge(cp, driver)


def test_sessions_are_filtered_by_cp_driver_and_time():
    web = Web()
    open_sid = charges(web)

    def ids(query):
        answer = web.get(f"/api/v1/sessions?{query}")
        assert answer.status == 200, answer.body
        return [s["id"] for s in answer.json()["recent"]]

    assert ids("") == [open_sid, "SC", "SB", "SA"]
    assert ids("cp=CP1") == [open_sid, "SC", "SA"]
    assert ids("cp=CP1&driver=D1") == [open_sid, "SA"]
    assert ids("since=20&until=40") == ["SC", "SB"]
    assert ids("since=1970-01-01T00:00:20Z") == [open_sid, "SC", "SB"]
    assert ids("cp=NOPE") == []
    body = web.get("/api/v1/sessions?driver=D2").json()
    assert body["ongoing"] == []  # the open charge is D1's
    assert [s["id"] for s in web.get("/api/v1/sessions?driver=D1").json()["ongoing"]] == [open_sid]


def test_sessions_are_paged_newest_first_by_a_cursor():
    web = Web()
    open_sid = charges(web)
    first = web.get("/api/v1/sessions?limit=3").json()
    assert [s["id"] for s in first["recent"]] == [open_sid, "SC", "SB"]
    assert first["next"] == "20.0:SB"
    second = web.get(f"/api/v1/sessions?limit=3&before={first['next']}").json()
    assert [s["id"] for s in second["recent"]] == ["SA"] and second["next"] is None


@pytest.mark.parametrize("query, says", [
    ("cp=a%20b", "cp must be a CP id"), ("driver=" + "x" * 40, "driver must be a driver id"),
    ("since=yesterday", "since: 'yesterday' is not a time"), ("until=99999999999999", "until:"),
    ("before=12", "before must be the 'next' of a page"), ("before=x:S1", "before must be"),
    ("limit=0", "limit must be between 1 and 500"), ("cp=", "cp is empty"),
])
def test_a_bad_session_filter_is_a_400_that_says_why(query, says):
    web = Web()
    answer = web.get(f"/api/v1/sessions?{query}")
    assert answer.status == 400 and says in answer.json()["error"], answer.body


# -- drivers ---------------------------------------------------------------------------------


def test_drivers_are_paged_newest_first():
    web = Web()
    store = web.world.store
    for n in range(1, 5):
        web.clock.advance(1)
        store.sign_up_driver(f"D{n}", verifier_of("x"))
    first = web.get("/api/v1/drivers?limit=3").json()
    assert [d["driver_id"] for d in first["drivers"]] == ["D4", "D3", "D2"] and first["next"] == "2.0:D2"
    second = web.get(f"/api/v1/drivers?limit=3&before={first['next']}").json()
    assert [d["driver_id"] for d in second["drivers"]] == ["D1"] and second["next"] is None
    assert all("verifier" not in d for d in first["drivers"] + second["drivers"])
    bad = web.get("/api/v1/drivers?before=D1")
    assert bad.status == 400 and "before must be" in bad.json()["error"]


# -- alerts ------------------------------------------------------------------------------------


def alerts(web):
    answer = web.get("/api/v1/alerts")
    assert answer.status == 200
    return answer.json()["alerts"]


def test_no_alerts_on_a_quiet_network():
    web = Web()
    web.world.cp()
    assert alerts(web) == []


def test_a_cp_whose_monitor_lost_its_engine_is_an_engine_lost_alert_until_it_recovers():
    web = Web()
    cp = web.world.cp()
    cp.send(m.Avr("CP1", "the Engine reports a fault (KO)"))  # the Engine answered: a fault, not a lost Engine
    assert alerts(web) == []
    cp.send(m.Rcv("CP1"))
    web.world.alive(cp, 5)
    cp.send(m.Avr("CP1", f"{AVR_ENGINE_LINK_LOST} (connection refused)"))
    [alert] = alerts(web)
    assert (alert["id"], alert["kind"], alert["subject"], alert["severity"]) == (
        "engine-lost:CP1", "engine-lost", "CP1", "critical")
    assert alert["since"] == "1970-01-01T00:00:05.000000Z" and "connection refused" in alert["message"]
    cp.send(m.Rcv("CP1"))
    assert alerts(web) == []


def test_each_weather_alert_and_evw_unhealthy_are_alerts():
    web = Web()
    web.world.cp("CP1", "Centro")
    weather = web.central.weather
    weather.raise_alert("Centro", "Alicante", -2.0, 0.0)
    [alert] = alerts(web)
    assert (alert["kind"], alert["subject"], alert["severity"]) == ("weather", "Centro", "warning")
    assert "Alicante, -2 °C" in alert["message"] and "CP1 out of service" in alert["message"]
    from evnet.central.weather import Heartbeat

    weather.took_heartbeat(Heartbeat(0.0, 4.0, 1, ()))
    web.clock.advance(13)
    weather.check()
    kinds = {a["kind"]: a for a in alerts(web)}
    assert set(kinds) == {"weather", "weather-stale"}
    assert kinds["weather-stale"]["subject"] == "EV_W" and "no heartbeat for 12 s" in kinds["weather-stale"]["message"]
    weather.clear_alert("Centro")
    weather.took_heartbeat(Heartbeat(13.0, 4.0, 1, ()))
    assert alerts(web) == []


def test_a_failed_cp_login_is_an_alert_for_a_while():
    web = Web()
    web.world.register("CP1")
    intruder = web.world.monitor("CP1", secret="a guess")
    with pytest.raises(AssertionError, match="got no KEY"):
        intruder.login()
    [alert] = alerts(web)
    assert (alert["kind"], alert["subject"], alert["severity"]) == ("cp-auth", "CP1", "warning")
    assert alert["message"].startswith("1 failed login of CP CP1") and "wrong secret" in alert["message"]
    web.clock.advance(CP_AUTH_WINDOW - 1)
    assert alerts(web) != []
    web.clock.advance(1)
    assert alerts(web) == []


def test_failed_logins_of_many_ids_hold_a_bounded_number_of_alerts():
    web = Web()
    for n in range(MAX_CP_AUTH + 20):
        web.central.alerts.cp_login_failed(f"X{n}", "unknown CP id")
        web.clock.advance(0.01)
    held = alerts(web)
    assert len(held) == MAX_CP_AUTH and held[-1]["subject"] == f"X{MAX_CP_AUTH + 19}"


def test_the_database_failing_is_an_alert_until_a_write_goes_through():
    web = Web()
    store = web.world.store
    real = store.add_event
    store.add_event = lambda *a, **k: defer.fail(RuntimeError("disk gone"))
    web.world.cp()
    [alert] = alerts(web)
    assert (alert["kind"], alert["severity"]) == ("database", "critical") and "disk gone" in alert["message"]
    store.add_event = real
    web.world.service._sweep()  # the sweep's probe: a read that answers
    assert alerts(web) == []


def test_kafka_unreachable_is_an_alert_while_it_lasts():
    from tests.test_central_bus import kafka_world

    world, bus = kafka_world()
    [observer] = bus.status_observers
    observer(False, "no broker available")
    [alert] = world.central.alerts.view()
    assert (alert["kind"], alert["subject"], alert["severity"]) == ("kafka", "fake:9092", "critical")
    assert alert["message"] == "Kafka unreachable at fake:9092: no broker available"
    observer(True, "")
    assert world.central.alerts.view() == []


# -- the network's totals ------------------------------------------------------------------------


def test_the_summary_counts_states_power_and_todays_charges():
    web = Web()
    web.clock.advance(3 * DAY)  # wall clock = Central's clock: UTC midnight is 3 * DAY
    store = web.world.store
    for sid, ended, kwh in (("OLD", 3 * DAY - 10, 9.0), ("T1", 3 * DAY + 1, 2.0)):  # yesterday's is not counted
        store.open_session({"id": sid, "cp_id": "CP9", "driver_id": "D9", "origin": "driver", "price": 0.5,
                            "target_kwh": 0.0, "started_at": ended - 100})
        store.close_session(sid, ended, kwh, kwh * 0.5, 100, 1, "target")
    cp, driver = web.world.cp("CP1"), web.world.driver()
    web.world.cp("CP2").send(m.Avr("CP2", "the Engine reports a fault (KO)"))
    web.world.cp("CP3")
    web.post("/api/v1/cps/CP3/stop")
    sid = web.world.charge(cp, driver)
    cp.send(m.Telem("CP1", sid, 1, 0.5, 7.2, 0.15, 60))
    body = web.get("/api/v1/summary").json()
    assert set(body) == {"cps", "states", "power_kw", "today", "alerts", "at"}
    assert body["cps"] == 3
    assert body["states"] == {"ACTIVADO": 0, "PARADO": 1, "SUMINISTRANDO": 1, "AVERIADO": 1, "DESCONECTADO": 0}
    assert body["power_kw"] == 7.2
    assert body["today"] == {"energy_kwh": 2.5, "revenue_eur": 1.15, "sessions": 2}
    assert body["alerts"] == 0 and body["at"].startswith("1970-01-04T")


def test_a_charge_being_closed_is_counted_once():
    web = Web()
    cp, driver = web.world.cp(), web.world.driver()
    sid = web.world.charge(cp, driver)
    cp.send(m.Telem("CP1", sid, 1, 1.0, 11.0, 0.3, 60))
    web.world.store.hold = True  # the close waits in the store's queue
    cp.send(m.Stop("CP1", sid, 2, 1.0, 0.3, 60, "target"))
    d = web.central.store.closed_since(0.0, [])  # asked with the close still unwritten
    web.world.store.hold = False
    from evnet.central.web.summary import network_summary

    pending = network_summary(web.central)
    web.world.store.release()
    assert d.called
    assert pending.result["today"]["sessions"] == 1 and pending.result["today"]["energy_kwh"] == 1.0
    assert web.get("/api/v1/summary").json()["today"]["sessions"] == 1


# -- the stream's summary and alerts events -----------------------------------------------------------


def test_the_stream_sends_a_summary_at_most_once_a_second_when_something_changed():
    web = Web()
    cp = web.world.cp()
    stream = Stream(web)

    def summaries():
        return [data for name, data in stream.named() if name == "summary"]

    assert summaries() == []
    web.clock.advance(1)
    [first] = summaries()
    assert first["states"]["ACTIVADO"] == 1
    web.clock.advance(1)
    assert len(summaries()) == 1  # nothing changed: no new summary
    web.post("/api/v1/cps/CP1/stop")
    cp.send(m.Status("CP1", "OK"))
    assert len(summaries()) == 1  # not before the second is over
    web.clock.advance(1)
    assert [s["states"]["PARADO"] for s in summaries()] == [0, 1]
    # A new client gets the last summary right after its snapshot.
    late = Stream(web)
    assert [name for name, _ in late.named()][:3] == ["snapshot", "alerts", "summary"]


def test_the_stream_sends_the_alerts_when_their_list_changes():
    web = Web()
    cp = web.world.cp()
    stream = Stream(web)
    web.clock.advance(1)

    def alert_events():
        return [data["alerts"] for name, data in stream.named() if name == "alerts"]

    assert alert_events() == [[]]
    cp.send(m.Avr("CP1", f"{AVR_ENGINE_LINK_LOST} (gone)"))
    web.clock.advance(1)
    events = alert_events()
    assert len(events) == 2 and [a["kind"] for a in events[-1]] == ["engine-lost"]
    summary = [data for name, data in stream.named() if name == "summary"][-1]
    assert summary["alerts"] == 1


def test_write_routes_stay_guarded_under_v1():
    web = Web(token="t0k")
    web.world.cp()
    assert web.post("/api/v1/cps/CP1/stop", host="10.1.2.3").status == 401
    assert web.post("/api/v1/cps/CP1/stop", headers=bearer("t0k"), host="10.1.2.3").status == 200


# -- evctl summary | alerts | sessions filters, through the in-memory site ------------------------------------


def test_evctl_summary_alerts_and_session_filters(capsys):
    from tests.test_web import evctl

    web = Web()
    cp = web.world.cp()
    code, out, err = evctl(capsys, web, "summary")
    assert (code, err) == (0, "")
    assert out == ("1 CPs: 1 ACTIVADO, 0 PARADO, 0 SUMINISTRANDO, 0 AVERIADO, 0 DESCONECTADO · 0 kW now · "
                   "today 0.000 kWh, 0.00 €, 0 charges · 0 alerts\n")
    assert evctl(capsys, web, "alerts")[1] == "no alerts\n"
    cp.send(m.Avr("CP1", f"{AVR_ENGINE_LINK_LOST} (gone)"))
    code, out, _ = evctl(capsys, web, "alerts")
    assert code == 0 and out.startswith("CRITICAL engine-lost") and "CP CP1 AVERIADO" in out
    code, out, _ = evctl(capsys, web, "alerts", "--json")
    assert code == 0 and [a["kind"] for a in json.loads(out)["alerts"]] == ["engine-lost"]
    code, out, err = evctl(capsys, web, "sessions", "--cp", "a b")
    assert code == 1 and "cp must be a CP id" in err
    driver = web.world.driver()
    cp.send(m.Rcv("CP1"))
    sid = web.world.charge(cp, driver)
    cp.send(m.Stop("CP1", sid, 1, 0.5, 0.15, 30, "target"))
    code, out, _ = evctl(capsys, web, "sessions", "--cp", "CP1", "--driver", "D1", "--limit", "1")
    assert code == 0 and f"{sid}  driver D1 at CP1" in out and "More: evctl sessions --before" in out
    assert "Recent tickets: none" in evctl(capsys, web, "sessions", "--driver", "D2")[1]


def test_a_failing_store_delays_the_streams_summary_and_says_so_once():
    from twisted.logger import LogLevel, capturedLogs, formatEvent

    web = Web()
    web.world.cp()
    stream = Stream(web)
    real = web.world.store.closed_since
    web.world.store.closed_since = lambda since, exclude: defer.fail(RuntimeError("disk gone"))
    with capturedLogs() as events:
        web.clock.advance(1)
        web.clock.advance(1)
    warned = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert warned == ["the stream's summary cannot be computed: disk gone"]
    assert [name for name, _ in stream.named()].count("summary") == 0
    assert web.get("/api/v1/summary").status == 503
    web.world.store.closed_since = real
    web.clock.advance(1)
    assert [name for name, _ in stream.named()].count("summary") == 1


def test_the_audit_trail_failing_to_write_is_a_database_alert_too():
    web = Web()
    store = web.world.store
    real = store.append_audit
    store.append_audit = lambda *a: defer.fail(RuntimeError("table locked"))
    web.world.cp()  # a login: audit rows
    web.central.audit.flush()
    [alert] = alerts(web)
    assert alert["kind"] == "database" and alert["message"] == (
        "the database failed while writing the audit trail: table locked")
    store.append_audit = real
    web.world.cp("CP2")
    web.central.audit.flush()
    assert alerts(web) == []
