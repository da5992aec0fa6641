"""The demo's verdict, part by part: its OCPP CP (from the lines ``evnet ocpp-cp`` prints and the drivers' tickets) and the drivers' logins in the audit trail."""

import json

from evnet.demo import OCPP_CP, Demo, DemoOptions

CHARGE = [
    {"type": "boot", "status": "Accepted", "interval": 10},
    {"type": "remote_start", "id_tag": "D2", "accepted": True},
    {"type": "transaction", "id": 1, "status": "Accepted"},
    {"type": "meter", "wh": 1010.0},
    {"type": "stopped", "transaction_id": 1, "reason": "Remote", "wh": 1050},
]


def demo_after(tmp_path, lines, tickets):
    demo = Demo(DemoOptions(workdir=str(tmp_path)), out=lambda text: None)
    for event in lines:
        demo._ocpp_line(None, json.dumps(event))
    demo.results["D2"].tickets = tickets
    return demo


def test_a_full_charge_at_the_ocpp_cp_passes(tmp_path):
    demo = demo_after(tmp_path, CHARGE, [{"cp": OCPP_CP, "kwh": 0.05, "session": "S1"}])
    assert demo.ocpp_problems() == []


def test_a_missing_step_or_ticket_fails_and_says_which(tmp_path):
    no_stop = demo_after(tmp_path, CHARGE[:-1], [{"cp": OCPP_CP, "kwh": 0.05}])
    assert no_stop.ocpp_problems() == [f"the OCPP CP {OCPP_CP}'s charge is missing: StopTransaction"]
    no_ticket = demo_after(tmp_path, CHARGE, [{"cp": "CP01", "kwh": 0.05}])
    assert no_ticket.ocpp_problems() == [f"the OCPP CP {OCPP_CP}'s charge is missing: the driver's ticket"]
    refused = demo_after(tmp_path, [CHARGE[0], {"type": "remote_start", "id_tag": "D2", "accepted": False}], [])
    assert "RemoteStartTransaction, StartTransaction, MeterValues" in refused.ocpp_problems()[0]


def _trail(path, rows):
    """Central's audit table (its real schema) in the SQLite file at C{path}, holding C{rows}."""
    import sqlite3

    from evnet.central.schema import _TABLES

    [table] = [t for t in _TABLES if "TABLE IF NOT EXISTS audit " in t]
    with sqlite3.connect(path) as db:
        db.execute(table.format(autoincrement="INTEGER PRIMARY KEY AUTOINCREMENT", binary="BLOB"))
        for seq, (kind, actor, action, outcome) in enumerate(rows, 1):
            db.execute("INSERT INTO audit (chain, seq, at, actor_kind, actor_id, address, action, outcome, detail, "
                       "prev, hash) VALUES ('c', ?, 'now', ?, ?, '127.0.0.1', ?, ?, '{}', '', '')",
                       (seq, kind, actor, action, outcome))


def test_the_verdict_needs_each_drivers_successful_login_in_the_audit_trail(tmp_path):
    db = tmp_path / "evcentral.db"
    _trail(db, [("driver", "D1", "driver.login", "ok"), ("driver", "D2", "driver.login", "refused"),
                ("cp", "D3", "cp.login", "ok"), ("driver", "D3", "driver.req", "ok")])
    demo = Demo(DemoOptions(workdir=str(tmp_path), db=f"sqlite:{db}"), out=lambda text: None)
    assert demo.login_problems() == ["the audit trail holds no successful login of driver D2, D3"]
    _trail(db, [("driver", "D2", "driver.login", "ok"), ("driver", "D3", "driver.login", "ok")])
    assert demo.login_problems() == []
