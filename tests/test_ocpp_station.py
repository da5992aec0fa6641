"""An OCPP charge point as Central's rules see it: the Station adapter on fakes (MemoryStore, task.Clock)."""

import json

from evnet.protocols import messages as m

from tests.ocpp_fakes import START, World, at


def charging(w, target=0.0, driver="D1"):
    """CP01 booted, driver D1 charging there: (cp, driver peer, transaction id, session id)."""
    cp, peer = w.cp(), w.driver(driver)
    peer.send(m.Req(driver, "CP01", target))
    auth = peer.take(m.Authorized)[0]
    remote = cp.calls("RemoteStartTransaction")[0]
    assert remote[3] == {"connectorId": 1, "idTag": driver}
    cp.answer(remote, {"status": "Accepted"})
    cp.status("Preparing")
    assert cp.ok("Authorize", {"idTag": driver}) == {"idTagInfo": {"status": "Accepted"}}
    answer = cp.start(driver)
    assert answer[0] == 3 and answer[2]["idTagInfo"] == {"status": "Accepted"}
    cp.status("Charging")
    return cp, peer, answer[2]["transactionId"], auth.session_id


def test_boot_is_accepted_with_the_heartbeat_and_the_registrys_location_and_price():
    w = World()
    cp = w.cp(boot=False)
    answer = cp.boot()
    assert answer["status"] == "Accepted" and answer["interval"] == 30
    assert answer["currentTime"] == "2026-01-01T10:00:00.000Z"
    assert w.state() == "ACTIVADO"
    assert (w.central.cps["CP01"].location, w.central.cps["CP01"].price) == ("Calle OCPP", 0.4)
    assert w.store.cps["CP01"]["location"] == "Calle OCPP"
    assert cp.ok("Heartbeat", {}) == {"currentTime": "2026-01-01T10:00:00.000Z"}


def test_a_cp_never_seen_must_boot_first_and_a_known_one_is_attached_when_it_connects():
    w = World()
    cp = w.cp(boot=False)
    frame = cp.call("Heartbeat", {})
    assert frame[:3] == [4, frame[1], "SecurityError"]
    assert "CP01" not in w.central.cps
    cp.boot()
    cp.lose()
    assert w.state() == "DESCONECTADO"
    again = w.cp(boot=False)  # reconnects without booting
    assert w.state() == "ACTIVADO"
    trigger = again.calls("TriggerMessage")[0]
    assert trigger[3] == {"requestedMessage": "StatusNotification"}
    assert again.ok("Heartbeat", {})


def test_a_drivers_charge_remote_started_metered_stopped_and_ticketed():
    w = World()
    cp, peer, tid, sid = charging(w)
    assert w.state() == "SUMINISTRANDO"
    peer.take()
    telem = []
    for wh, seconds in ((1100, 10), (1250, 20)):
        cp.meter(tid, wh, seconds)
        telem += peer.take(m.Telem)
    assert [(t.session_id, t.kwh, t.kw, t.seconds) for t in telem][-2:] == [(sid, 0.1, 11.0, 10), (sid, 0.25, 11.0, 20)]
    assert telem[-1].euros == 0.1  # 0.25 kWh at 0.4 €/kWh
    assert cp.stop(tid, 1000 + 300, 25, "EVDisconnected", idTag="D1") == {"idTagInfo": {"status": "Accepted"}}
    ticket = peer.take(m.Ticket)[0]
    assert (ticket.session_id, ticket.kwh, ticket.euros, ticket.duration_seconds, ticket.reason) == (sid, 0.3, 0.12, 25, "unplug")
    row = w.store.sessions[sid]
    assert (row["status"], row["kwh"], row["end_reason"]) == ("closed", 0.3, "unplug")
    assert w.state() == "ACTIVADO"
    assert w.transactions.rows[tid].stopped_at is not None


def test_a_repeated_meter_value_or_stop_is_not_counted_twice():
    w = World()
    cp, peer, tid, sid = charging(w)
    cp.meter(tid, 1200, 20)
    cp.meter(tid, 1100, 10)  # late, older: not counted
    assert w.central.sessions[sid].kwh == 0.2
    cp.stop(tid, 1300, 30)
    cp.stop(tid, 1900, 40)  # the CP did not get the answer and says it again, differently
    assert w.store.sessions[sid]["kwh"] == 0.3
    tickets = peer.take(m.Ticket)
    assert [t.kwh for t in tickets] == [0.3]


def test_the_target_is_reached_central_stops_the_transaction_and_the_ticket_says_target():
    w = World()
    cp, peer, tid, sid = charging(w, target=0.2)
    cp.meter(tid, 1150, 10)
    assert cp.calls("RemoteStopTransaction") == []
    cp.meter(tid, 1210, 20)
    stop = cp.calls("RemoteStopTransaction")[0]
    assert stop[3] == {"transactionId": tid}
    cp.answer(stop, {"status": "Accepted"})
    cp.stop(tid, 1215, 21, "Remote")
    assert peer.take(m.Ticket)[0].reason == "target"


def test_a_refused_remote_start_ends_the_session():
    w = World()
    cp, peer = w.cp(), w.driver()
    peer.send(m.Req("D1", "CP01"))
    cp.answer(cp.calls("RemoteStartTransaction")[0], {"status": "Rejected"})
    ticket = peer.take(m.Ticket)[0]
    assert (ticket.kwh, ticket.reason) == (0.0, "busy")
    assert w.state() == "ACTIVADO"


def test_a_remote_start_the_cp_gives_up_on_ends_the_session():
    w = World()
    cp, peer = w.cp(), w.driver()
    peer.send(m.Req("D1", "CP01"))
    cp.answer(cp.calls("RemoteStartTransaction")[0], {"status": "Accepted"})
    cp.status("Preparing")
    cp.status("Available")  # the CP's ConnectionTimeOut: no cable
    assert peer.take(m.Ticket)[0].reason == "unplug"


def test_a_charge_started_at_the_cp_is_a_request_of_origin_cp():
    w = World()
    cp = w.cp()
    answer = cp.start("D7", meter=5000)
    assert answer[2]["idTagInfo"] == {"status": "Accepted"}
    tid = answer[2]["transactionId"]
    assert cp.calls("RemoteStartTransaction") == []
    session = w.central.cps["CP01"].session
    assert (session.driver_id, session.origin) == ("D7", "cp")
    cp.meter(tid, 5500, 30)
    cp.stop(tid, 5600, 40)
    assert w.store.sessions[session.id]["kwh"] == 0.6
    # A start Central refuses: the CP gets a transaction id for it, nothing is billed.
    w.central.stop_cp("CP01")
    refused = cp.start("D8")
    assert refused[2]["idTagInfo"]["status"] == "Blocked"
    assert cp.stop(refused[2]["transactionId"], 1000, 5) == {}
    assert len(w.store.sessions) == 1
    assert cp.start("bad id!")[2]["idTagInfo"]["status"] == "Invalid"


def test_authorize_knows_a_driver_charging_elsewhere():
    w = World()
    charging(w)
    other = w.cp("CP02")
    assert other.ok("Authorize", {"idTag": "D1"}) == {"idTagInfo": {"status": "ConcurrentTx"}}
    assert other.ok("Authorize", {"idTag": "x" * 20})["idTagInfo"]["status"] == "Accepted"


def test_faulted_makes_the_cp_averiado_and_ends_its_charge_available_recovers_it():
    w = World()
    cp, peer, tid, sid = charging(w)
    cp.status("Faulted", error="GroundFailure")
    assert w.state() == "AVERIADO"
    assert peer.take(m.Ticket)[0].reason.startswith("fault: OCPP Faulted: GroundFailure")
    assert cp.calls("RemoteStopTransaction")[0][3] == {"transactionId": tid}
    cp.ok("Heartbeat", {})  # signs of life keep it AVERIADO
    assert w.state() == "AVERIADO"
    cp.status("Available")
    assert w.state() == "ACTIVADO"
    assert [e[0] for e in w.store.events if e[0] in ("fault", "recover")] == ["fault", "recover"]


def test_parar_and_reanudar_are_change_availability_and_unavailable_then_is_no_fault():
    w = World()
    cp, peer, tid, sid = charging(w)
    w.central.stop_cp("CP01")
    calls = cp.calls()
    assert [(c[2], c[3]) for c in calls] == [("RemoteStopTransaction", {"transactionId": tid})]
    cp.answer(calls[0], {"status": "Accepted"})
    change = cp.calls("ChangeAvailability")[0]
    assert change[3] == {"connectorId": 0, "type": "Inoperative"}
    cp.answer(change, {"status": "Accepted"})
    cp.stop(tid, 1100, 10, "Remote")
    cp.status("Unavailable", connector=0)
    assert w.state() == "PARADO"
    assert peer.take(m.Ticket)[0].reason == "parar"
    w.central.resume_all()
    assert cp.calls("ChangeAvailability")[0][3] == {"connectorId": 0, "type": "Operative"}
    assert w.state() == "ACTIVADO"
    # Unavailable when nobody asked: the CP cannot be used.
    cp.status("Unavailable")
    assert w.state() == "AVERIADO"


def test_a_stopped_cp_is_told_inoperative_when_it_comes_back():
    w = World()
    cp = w.cp()
    w.central.stop_cp("CP01")
    cp.lose()
    again = w.cp(boot=False)
    assert [c[3] for c in again.calls("ChangeAvailability")] == [{"connectorId": 0, "type": "Inoperative"}]


def test_liveness_pings_keep_the_cp_and_silence_makes_it_desconectado():
    w = World()
    cp = w.cp()
    factory_ticks = 0
    for _ in range(10):
        cp.station.tick()
        factory_ticks += 1
        w.clock.advance(1)
        cp.station.pong()
    assert cp.connection.pings == factory_ticks and w.state() == "ACTIVADO"
    w.clock.advance(4)  # no pong, no message
    assert w.state() == "DESCONECTADO"
    assert cp.connection.closed == "closed by Central"


def test_every_bad_call_gets_the_callerror_that_names_it():
    w = World()
    cp = w.cp()
    assert cp.call("MakeCoffee", {})[2] == "NotImplemented"
    assert cp.call("RemoteStartTransaction", {"idTag": "D1"})[2] == "NotSupported"
    assert cp.call("StatusNotification", {"connectorId": 1})[2] == "ProtocolError"
    assert cp.call("StatusNotification", {"connectorId": "1", "errorCode": "NoError", "status": "Available"})[2] \
        == "TypeConstraintViolation"
    assert cp.call("StartTransaction", {"connectorId": 1, "idTag": "D1", "meterStart": 0, "timestamp": "soon"})[2] \
        == "PropertyConstraintViolation"
    assert cp.raw("[2, 'single quotes']")[0][:3] == [4, "-1", "FormationViolation"]
    assert cp.ok("DataTransfer", {"vendorId": "ACME"}) == {"status": "Rejected"}
    assert cp.ok("FirmwareStatusNotification", {"status": "Idle"}) == {}
    # An answer to no call of ours is logged, not answered (one cannot answer a CALLRESULT).
    assert cp.raw(json.dumps([3, "nobody", {}])) == []


def test_a_handler_that_fails_answers_internal_error_and_the_station_goes_on(monkeypatch):
    w = World()
    cp = w.cp()
    monkeypatch.setattr(w.central, "driver_sessions", None)
    assert cp.call("Authorize", {"idTag": "D1"})[2] == "InternalError"
    monkeypatch.undo()
    assert cp.ok("Authorize", {"idTag": "D1"})["idTagInfo"]["status"] == "Accepted"


def test_the_store_failing_on_start_transaction_is_an_internal_error_the_cp_may_retry():
    w = World()
    cp, peer = w.cp(), w.driver()
    peer.send(m.Req("D1", "CP01"))
    cp.answer(cp.calls("RemoteStartTransaction")[0], {"status": "Accepted"})
    w.transactions.fail = True
    assert cp.start()[2] == "InternalError"
    w.transactions.fail = False
    assert cp.start()[2]["idTagInfo"] == {"status": "Accepted"}


def test_a_charge_open_when_central_restarts_goes_on_and_is_closed_once():
    w = World()
    cp, peer, tid, sid = charging(w)
    cp.meter(tid, 1100, 10)
    w.central.charges.flush()
    w.service.stopService()
    # Central starts again on the same database; the CP reconnects without booting.
    w2 = World(store=w.store)
    w2.transactions = w.transactions
    assert w2.central.sessions[sid].kwh == 0.1
    cp2 = w2.cp(boot=False)
    assert w2.state() == "SUMINISTRANDO"
    triggers = []
    for _ in range(2):
        call = cp2.calls("TriggerMessage")[0]
        triggers.append(call[3]["requestedMessage"])
        cp2.answer(call, {"status": "Accepted"})
    assert sorted(triggers) == ["MeterValues", "StatusNotification"]
    w2.clock.advance(1)
    cp2.meter(tid, 1150, 15)
    for _ in range(20):  # past the reconcile timeout: the meter values were the CP's report
        w2.clock.advance(1)
        cp2.station.pong()
    assert w2.central.sessions[sid].kwh == 0.15
    cp2.stop(tid, 1200, 20, "Local")
    cp2.stop(tid, 1200, 20, "Local")
    row = w2.store.sessions[sid]
    assert (row["status"], row["kwh"], row["euros"]) == ("closed", 0.2, 0.08)


def test_a_session_central_closed_while_the_cp_was_away_is_stopped_and_not_billed_again():
    w = World()
    cp, peer, tid, sid = charging(w)
    cp.meter(tid, 1100, 10)
    cp.lose()  # Central ends the charge with what it has
    assert w.store.sessions[sid]["end_reason"] == "disconnected"
    cp2 = w.cp(boot=False)
    cp2.answer(cp2.calls()[0], {"status": "Accepted"})  # its TriggerMessage StatusNotification
    cp2.meter(tid, 1500, 50)  # the CP charged on meanwhile
    assert cp2.calls("RemoteStopTransaction")[0][3] == {"transactionId": tid}
    cp2.stop(tid, 1600, 60, "Remote")
    assert w.store.sessions[sid]["kwh"] == 0.1  # what was recorded when it ended
    assert [t.session_id for t in peer.take(m.Ticket)] == [sid]


def test_a_lost_connection_fails_the_calls_waiting_and_the_cp_is_desconectado():
    w = World()
    cp = w.cp()
    done = []
    cp.station.reset("Hard").addErrback(lambda f: done.append(f.getErrorMessage()))
    assert cp.calls("Reset")[0][3] == {"type": "Hard"}
    cp.lose("cable cut")
    assert w.state() == "DESCONECTADO" and "cable cut" in done[0]
    assert not cp.station.is_open


def test_calls_go_one_at_a_time_and_a_silent_cp_times_out():
    w = World()
    cp = w.cp()
    results = []
    cp.station.trigger("Heartbeat").addBoth(results.append)
    cp.station.trigger("BootNotification").addBoth(results.append)
    first = cp.calls()
    assert [c[3]["requestedMessage"] for c in first] == ["Heartbeat"]
    cp.answer(first[0], {"status": "Accepted"})
    assert results == ["Accepted"] and cp.station.pending == 1
    second = cp.calls()
    assert [c[3]["requestedMessage"] for c in second] == ["BootNotification"]
    w.clock.advance(31)
    assert "no answer" in results[1].getErrorMessage()
    # A late or invalid answer is not taken for another call's.
    cp.station.trigger("Heartbeat").addBoth(results.append)
    cp.answer(cp.calls()[0], {"status": "Perhaps"})
    assert "invalid answer" in results[2].getErrorMessage()
