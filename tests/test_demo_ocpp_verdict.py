"""The demo's verdict on its OCPP CP, from the lines ``evnet ocpp-cp`` prints and the drivers' tickets."""

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
