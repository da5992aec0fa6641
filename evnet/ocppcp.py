"""
``evnet ocpp-cp``: a simulated OCPP 1.6J charge point, written with the
mobilityhouse ``ocpp`` library (asyncio + ``websockets``): a client nobody
here wrote, so EV_Central is checked against someone else's reading of
OCPP, not against its own.  The end-to-end tests and ``evnet demo`` run it.

    evnet ocpp-cp --url ws://127.0.0.1:PORT/ocpp/CP01 --cp-id CP01 --credentials-file F

The secret (security profile 1/2's Basic auth password) comes from a file:
``--credentials-file`` (what ``evctl registry add --credentials-file``
writes) or ``--password-file`` (the secret alone).

It boots, answers RemoteStart/RemoteStop/ChangeAvailability/Reset/
TriggerMessage, charges with MeterValues every --meter-interval seconds,
and prints one JSON object per event on stdout (its "type" says which).  Lines on stdin drive it:
``fault``, ``ok`` (Available again), ``unplug``, ``heartbeat``, ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import ssl
import sys
from datetime import datetime, timezone

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def emit(event: str, **fields) -> None:
    print(json.dumps({"type": event, **fields}), flush=True)


class Station(ChargePoint):
    def __init__(self, cp_id, connection, power_w: float, interval: float):
        super().__init__(cp_id, connection, response_timeout=10)
        self.power_w = power_w
        self.interval = interval
        self.wh = 1000.0  # the meter register does not start at zero
        self.tx = None
        self.operative = True
        self.tasks: set[asyncio.Task] = set()

    def later(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def status(self, status: str, error: str = "NoError", connector: int = 1) -> None:
        await self.call(call.StatusNotification(connector_id=connector, error_code=error, status=status))
        emit("status", status=status)

    @on("RemoteStartTransaction")
    def on_remote_start(self, id_tag, connector_id=None, **_):
        ok = self.operative and self.tx is None
        emit("remote_start", id_tag=id_tag, accepted=ok)
        if ok:
            self.later(self.start_transaction(id_tag))
        return call_result.RemoteStartTransaction(status="Accepted" if ok else "Rejected")

    @on("RemoteStopTransaction")
    def on_remote_stop(self, transaction_id):
        ok = transaction_id == self.tx
        emit("remote_stop", transaction_id=transaction_id, accepted=ok)
        if ok:
            self.later(self.stop("Remote"))
        return call_result.RemoteStopTransaction(status="Accepted" if ok else "Rejected")

    @on("ChangeAvailability")
    def on_change_availability(self, connector_id, type):
        self.operative = type == "Operative"
        emit("availability", kind=type, connector=connector_id)
        self.later(self.status("Available" if self.operative else "Unavailable", connector=0))
        return call_result.ChangeAvailability(status="Accepted")

    @on("Reset")
    def on_reset(self, type):
        emit("reset", kind=type)
        return call_result.Reset(status="Accepted")

    @on("TriggerMessage")
    def on_trigger(self, requested_message, connector_id=None):
        emit("trigger", message=requested_message)
        if requested_message == "StatusNotification":
            state = "Charging" if self.tx else ("Available" if self.operative else "Unavailable")
            self.later(self.status(state))
        elif requested_message == "MeterValues":
            self.later(self.meter())
        return call_result.TriggerMessage(status="Accepted")

    async def start_transaction(self, id_tag: str) -> None:
        await self.status("Preparing")
        auth = await self.call(call.Authorize(id_tag=id_tag))
        emit("authorize", status=auth.id_tag_info["status"])
        result = await self.call(call.StartTransaction(connector_id=1, id_tag=id_tag, meter_start=int(self.wh),
                                                      timestamp=now()))
        emit("transaction", id=result.transaction_id, status=result.id_tag_info["status"])
        if result.id_tag_info["status"] != "Accepted":
            return
        self.tx = result.transaction_id
        await self.status("Charging")
        self.later(self.meter_loop(self.tx))

    async def meter(self) -> None:
        sample = [{"timestamp": now(), "sampled_value": [
            {"value": f"{self.wh:.1f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": f"{self.power_w:.0f}", "measurand": "Power.Active.Import", "unit": "W"},
        ]}]
        await self.call(call.MeterValues(connector_id=1, transaction_id=self.tx, meter_value=sample))
        emit("meter", wh=round(self.wh, 1))

    async def meter_loop(self, tx) -> None:
        while self.tx == tx:
            await asyncio.sleep(self.interval)
            if self.tx != tx:
                return
            self.wh += self.power_w * self.interval / 3600.0
            await self.meter()

    async def stop(self, reason: str) -> None:
        tx, self.tx = self.tx, None
        if tx is None:
            return
        self.wh += self.power_w * 0.1 / 3600.0
        await self.call(call.StopTransaction(meter_stop=int(self.wh), timestamp=now(), transaction_id=tx, reason=reason))
        emit("stopped", transaction_id=tx, reason=reason, wh=int(self.wh))
        await self.status("Finishing")
        await self.status("Available" if self.operative else "Unavailable")

    async def heartbeats(self, interval: int) -> None:
        """Heartbeat every C{interval} seconds, the interval BootNotification's answer gave."""
        while True:
            await asyncio.sleep(max(1, interval))
            result = await self.call(call.Heartbeat())
            emit("heartbeat", current_time=result.current_time)

    async def commands(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline))
            if not line:  # no console (stdin closed or /dev/null): the CP runs until it is stopped
                await asyncio.Future()
            if line.strip() == "quit":
                return
            word = line.strip()
            if word == "fault":
                await self.status("Faulted", error="GroundFailure")
            elif word == "ok":
                await self.status("Available")
            elif word == "unplug":
                await self.stop("EVDisconnected")
            elif word == "heartbeat":
                result = await self.call(call.Heartbeat())
                emit("heartbeat", current_time=result.current_time)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="Central's OCPP endpoint and this CP's path, "
                        "e.g. ws://127.0.0.1:9000/ocpp/CP01")
    parser.add_argument("--cp-id", required=True, help="the CP id (the Basic auth user)")
    secret = parser.add_mutually_exclusive_group(required=True)
    secret.add_argument("--credentials-file", metavar="PATH",
                        help="the JSON credentials evctl registry add --credentials-file wrote")
    secret.add_argument("--password-file", metavar="PATH", help="a file holding the secret alone")
    parser.add_argument("--ca-file", metavar="PATH",
                        help="for a wss:// URL (security profile 2): the certificate to trust for Central")
    parser.add_argument("--power-w", type=float, default=36000.0, help="the power it charges at (default 36000)")
    parser.add_argument("--meter-interval", type=float, default=1.0,
                        help="seconds between MeterValues while charging (default 1)")


def read_secret(args: argparse.Namespace) -> str:
    """The secret from --credentials-file or --password-file; ValueError says what is wrong, in one line."""
    path = args.credentials_file or args.password_file
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read it: {e.strerror}") from None
    if args.credentials_file:
        try:
            text = json.loads(text)["secret"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"--credentials-file {path}: not a credentials file (JSON with a secret)") from None
    if not text.strip():
        raise ValueError(f"{path}: the file holds no secret")
    return text.strip()


async def run(args: argparse.Namespace, password: str) -> int:
    context = ssl.create_default_context(cafile=args.ca_file) if args.url.startswith("wss:") else None
    basic = base64.b64encode(f"{args.cp_id}:{password}".encode()).decode()
    try:
        connection = await websockets.connect(args.url, subprotocols=["ocpp1.6"],
                                              additional_headers={"Authorization": f"Basic {basic}"},
                                              ping_interval=None, ssl=context)
    except websockets.InvalidStatus as e:
        emit("refused", status=e.response.status_code)
        return 3
    emit("connected", subprotocol=connection.subprotocol)
    station = Station(args.cp_id, connection, args.power_w, args.meter_interval)
    serving = asyncio.ensure_future(station.start())
    boot = await station.call(call.BootNotification(charge_point_model="Sim-1", charge_point_vendor="evnet-sim"))
    emit("boot", status=boot.status, interval=boot.interval)
    await station.status("Available")
    station.later(station.heartbeats(boot.interval))
    commands = asyncio.ensure_future(station.commands())
    done, _ = await asyncio.wait([serving, commands], return_when=asyncio.FIRST_COMPLETED)
    emit("closed", why="quit" if commands in done else str(serving.exception()))
    await connection.close()
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        password = read_secret(args)
    except ValueError as e:
        print(f"evnet ocpp-cp: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(args, password))
    except OSError as e:
        emit("unreachable", reason=str(e))
        return 3
    except KeyboardInterrupt:
        return 130
