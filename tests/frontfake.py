"""
A test-only stand-in for Central's web face, for the front's browser tests,
its load measurement and its screenshots: it serves the dashboard's static
files as Central does and a fake event stream (the snapshot, then whatever
the test publishes, or every CP updated once a second), with the few read
endpoints the page calls.  Threads and the standard library only: no
reactor, nothing of Central.

The optional endpoints (C{/api/v1/summary}, C{/api/v1/alerts}) answer 404
until the test gives them a body, as a Central without them does.
"""

from __future__ import annotations

import json
import queue
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

STATIC = Path(__file__).resolve().parent.parent / "evnet" / "central" / "web" / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
CITIES = ["Alicante", "Elche", "Valencia", "Murcia", "Madrid", "Sevilla", "Bilbao", "Zaragoza", "Granada", "Castellón"]
STATE_MIX = ["SUMINISTRANDO"] * 6 + ["ACTIVADO"] * 2 + ["PARADO", "AVERIADO", "DESCONECTADO"]


def make_cp(cp_id: str, location: str, state: str = "ACTIVADO", kw: Optional[float] = None, kwh: float = 0.0,
            price: float = 0.3, **extra) -> dict:
    """A CP as Central's API says it (docs/panel.md)."""
    charging = state == "SUMINISTRANDO"
    cp = {"id": cp_id, "location": location, "price": price, "state": state, "stopped": state == "PARADO",
          "engine_ok": state != "AVERIADO", "weather_alert": False,
          "driver_id": f"D{cp_id[2:]}" if charging else None, "session_id": f"S{cp_id}" if charging else None,
          "kw": (11.0 if kw is None else kw) if charging else None, "kwh": kwh if charging else None,
          "euros": round(kwh * price, 2) if charging else None, "seconds": 0 if charging else None,
          "registration": "registered", "key": "none" if state == "DESCONECTADO" else "active",
          "key_id": None if state == "DESCONECTADO" else "0a1b2c3d", "key_issued_at": None, "key_revoked_by": None}
    cp.update(extra)
    return cp


def network(n: int, seed: int = 7) -> list[dict]:
    """C{n} CPs (CP0001…) in several cities and every state, most of them charging."""
    rng = random.Random(seed)
    return [make_cp(f"CP{i:04d}", f"{CITIES[i % len(CITIES)]} {rng.randint(1, 99)}", STATE_MIX[i % len(STATE_MIX)],
                    kw=round(rng.uniform(3.7, 22.0), 1), kwh=round(rng.uniform(0, 30), 3)) for i in range(1, n + 1)]


def frame(event: str, data: dict) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (event.encode(), json.dumps(data, separators=(",", ":")).encode())


class FakeCentral:
    """The fake web face on 127.0.0.1 (an ephemeral port): L{url}, L{publish}, L{tick_every_second}."""

    def __init__(self, cps: list[dict]) -> None:
        self.cps = {cp["id"]: cp for cp in cps}
        self.summary: Optional[dict] = None
        self.alerts: Optional[dict] = None
        self.weather = {"alerts": [], "health": {"state": "not heard from"}, "stale_after": 600}
        self.clients: list[queue.Queue] = []
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.connected = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.serve(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self._threads = [threading.Thread(target=self.server.serve_forever, daemon=True)]
        self._threads[0].start()

    # -- what the page reads -------------------------------------------------------------

    def serve(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        if path == "/api/v1/stream":
            return self._stream(h)
        answers = {"/api/v1/drivers": {"drivers": []}, "/api/v1/sessions": {"ongoing": [], "recent": []},
                   "/api/v1/audit": {"rows": [], "next": None}, "/api/v1/summary": self.summary,
                   "/api/v1/alerts": self.alerts}
        if path in answers:
            body = answers[path]
            if body is None:
                return self._send(h, 404, {"error": f"no such path {path}"})
            return self._send(h, 200, body)
        name = "index.html" if path == "/" else path.lstrip("/")
        file = STATIC / name
        if "/" in name or not file.is_file():
            return self._send(h, 404, {"error": "not found"})
        self._reply(h, 200, TYPES.get(file.suffix, "application/octet-stream"), file.read_bytes())

    @classmethod
    def _send(cls, h, status, body) -> None:
        cls._reply(h, status, "application/json; charset=utf-8", json.dumps(body).encode())

    @staticmethod
    def _reply(h, status, content_type, data) -> None:
        h.send_response(status)
        for name, value in (("Content-Type", content_type), ("Content-Length", str(len(data)))):
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(data)

    def _stream(self, h) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream; charset=utf-8")
        h.send_header("Cache-Control", "no-store")
        h.end_headers()
        mine: queue.Queue = queue.Queue()
        with self.lock:
            snapshot = {"type": "snapshot", "cps": [self.cps[k] for k in sorted(self.cps)], "sessions": [],
                        "messages": [], "weather": self.weather}
            self.clients.append(mine)
        try:
            h.wfile.write(b"retry: 500\n\n" + frame("snapshot", snapshot))
            h.wfile.flush()
            self.connected.set()
            while not self.closing.is_set():
                try:
                    data = mine.get(timeout=0.2)
                except queue.Empty:
                    continue
                h.wfile.write(data)
                h.wfile.flush()
        except OSError:
            pass
        finally:
            with self.lock:
                self.clients.remove(mine)

    # -- what the test makes happen --------------------------------------------------------

    def publish(self, event: str, data: dict) -> None:
        self.publish_bytes(frame(event, data))

    def publish_bytes(self, data: bytes) -> None:
        with self.lock:
            for client in self.clients:
                client.put(data)

    def put_cp(self, cp: dict, event: str = "cp") -> None:
        with self.lock:
            self.cps[cp["id"]] = cp
        self.publish(event, {"type": event, "cp": cp})

    def update_all(self) -> int:
        """Every CP once: a charging one's telemetry (its energy grows), the others' state again; how many."""
        chunks = []
        with self.lock:
            for cp in self.cps.values():
                if cp["state"] == "SUMINISTRANDO":
                    cp["kwh"] = round(cp["kwh"] + cp["kw"] / 3600, 4)
                    cp["euros"] = round(cp["kwh"] * cp["price"], 2)
                    cp["seconds"] += 1
                    chunks.append(frame("telemetry", {"type": "telemetry", "cp": cp}))
                else:
                    chunks.append(frame("cp", {"type": "cp", "cp": cp}))
        self.publish_bytes(b"".join(chunks))
        return len(chunks)

    def tick_every_second(self) -> None:
        """From now until L{close}: L{update_all} once a second."""
        def run():
            while not self.closing.wait(1.0):
                self.update_all()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(5)
