"""
In-memory fakes shared by the unit tests:

- L{MemoryStore}: the real Store's interface and contract over dicts (synchronous
  Deferreds, optionally held to test ordering);
- L{Peer}: drives a FramedLink over a StringTransport, acknowledging what it
  receives; L{Monitor}: a Peer that logs in as a CP with its credentials and
  then seals what it sends and opens what it gets, as an honest Monitor does;
- L{RecordingHandler}, L{make_link}, L{take}, L{frame_of}: a LinkHandler
  that records what happens, and a FramedLink on a StringTransport.
"""

import sqlite3
import time

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from evnet.central import audittrail
from evnet.central.store import _TABLES, _INDEXES
from evnet.protocols import framing
from evnet.protocols import messages as m
from evnet.protocols import security
from evnet.protocols.framing import ACK_BYTE, ENQ_BYTE, Kind, encode_frame
from evnet.protocols.link import FramedLink, LinkHandler
from evnet.protocols.messages import decode

FAST_COST = 2**4  # the scrypt cost of the verifiers the unit tests register (a real one is 2**14)


class DuplicateKey(Exception):
    """What MemoryStore raises where the database would refuse a second row with the same key."""


class MemoryStore:
    """
    The real Store's interface and contract over dicts (tests/test_store.py
    runs the same tests on both): the same rows with the same keys and types,
    the same order, what a missing row gives, failures as failed Deferreds.
    Timestamps come from C{now} (the real store uses the wall clock).

    Calls answer at once, in the order asked.  With C{hold=True} they wait in
    C{held} until L{release}; a call asked while others are held waits behind
    them (also once C{hold} is off), as it would in the real store's queue.
    """

    def __init__(self, now=time.time):
        self.now = now
        self.cps = {}
        self.drivers = {}
        self.sessions = {}
        self.registrations = {}  # EV_Registry's rows, by CP id (what RegistryStore writes in the real one)
        self.driver_accounts_rows = {}  # EV_Registry's driver accounts, by id
        self.event_rows = []
        self.weather_alerts = {}  # by location
        self.hold = False
        self.held = []
        self.closed = False
        self.started = 0

    @property
    def events(self):
        """(kind, subject, detail) of every event, oldest first."""
        return [(e["kind"], e["subject"], e["detail"]) for e in self.event_rows]

    def _run(self, fn):
        if self.hold or self.held:
            d = defer.Deferred()
            self.held.append((d, fn))
            return d
        return defer.maybeDeferred(fn)

    def release(self):
        """Run the held calls in order, then fire their Deferreds (as one shared commit would)."""
        held, self.held = self.held, []
        outcomes = [defer.maybeDeferred(fn) for _, fn in held]
        for (d, _), outcome in zip(held, outcomes):
            outcome.chainDeferred(d)

    def start(self):
        self.started += 1
        return self._run(lambda: None)

    def close(self):
        self.closed = True

    # -- CPs and drivers

    def load_cps(self):
        def rows():
            return [{**self.cps[cp_id], "registration": self.registrations.get(cp_id, {}).get("status")}
                    for cp_id in sorted(self.cps)]

        return self._run(rows)

    # -- EV_Registry's rows (Central only reads them; these writers stand in for RegistryStore)

    def registration(self, cp_id):
        return self._run(lambda: dict(self.registrations[cp_id]) if cp_id in self.registrations else None)

    def register_cp(self, cp_id, location, price, verifier):
        """An alta at EV_Registry (or a new one, with new credentials): C{verifier} is its text."""
        now = self.now()
        row = self.registrations.get(cp_id, {"cp_id": cp_id, "registered_at": now})
        row.update(location=location, price=float(price), verifier=verifier, status="registered", updated_at=now)
        self.registrations[cp_id] = row

    def driver_account(self, driver_id):
        row = self.driver_accounts_rows.get(driver_id)
        return self._run(lambda: dict(row) if row is not None else None)

    def driver_accounts(self):
        keys = ("driver_id", "status", "created_at", "updated_at")
        return self._run(lambda: [{k: r[k] for k in keys} for _, r in sorted(self.driver_accounts_rows.items())])

    def sign_up_driver(self, driver_id, verifier):
        """A driver signed up at EV_Registry: C{verifier} is its text."""
        now = self.now()
        row = self.driver_accounts_rows.setdefault(driver_id, {"driver_id": driver_id, "created_at": now})
        row.update(verifier=verifier, status="registered", updated_at=now)

    def deregister_cp(self, cp_id):
        """A baja at EV_Registry: the verifier is gone."""
        self.registrations[cp_id].update(verifier=None, status="deregistered", updated_at=self.now())

    def upsert_cp(self, cp_id, location, price, state):
        now = self.now()

        def do():
            row = self.cps.setdefault(cp_id, {"id": cp_id, "stopped": 0, "registered_at": now})
            row.update(location=location, price=float(price), state=state, last_seen=now)

        return self._run(do)

    def set_cp_state(self, cp_id, state, stopped):
        now = self.now()

        def do():
            if cp_id in self.cps:
                self.cps[cp_id].update(state=state, stopped=int(stopped), last_seen=now)

        return self._run(do)

    def touch_driver(self, driver_id):
        now = self.now()

        def do():
            self.drivers.setdefault(driver_id, {"id": driver_id, "first_seen": now})["last_seen"] = now

        return self._run(do)

    # -- sessions

    def open_session(self, s):
        row = {
            "id": s["id"], "cp_id": s["cp_id"], "driver_id": s["driver_id"], "origin": s["origin"],
            "price": float(s["price"]), "target_kwh": float(s["target_kwh"]), "started_at": float(s["started_at"]),
            "ended_at": None, "kwh": 0.0, "euros": 0.0, "seconds": 0, "last_seq": 0, "status": "open",
            "end_reason": None, "ticket_delivered_at": None,
        }

        def do():
            if row["id"] in self.sessions:
                raise DuplicateKey(f"Duplicate entry {row['id']!r} for key 'PRIMARY'")
            self.sessions[row["id"]] = row

        return self._run(do)

    @staticmethod
    def _progress(row, kwh, euros, seconds, last_seq, **more):
        row.update(kwh=float(kwh), euros=float(euros), seconds=int(seconds), last_seq=int(last_seq), **more)

    def save_progress(self, rows):
        def do():
            for kwh, euros, seconds, last_seq, sid in rows:
                row = self.sessions.get(sid)
                if row is not None and row["status"] == "open":
                    self._progress(row, kwh, euros, seconds, last_seq)

        return self._run(do)

    def close_session(self, sid, ended_at, kwh, euros, seconds, last_seq, reason):
        def do():
            row = self.sessions.get(sid)
            if row is None or row["status"] != "open":
                return False
            self._progress(row, kwh, euros, seconds, last_seq,
                           status="closed", ended_at=float(ended_at), end_reason=reason)
            return True

        return self._run(do)

    def mark_ticket_delivered(self, sid):
        now = self.now()

        def do():
            row = self.sessions.get(sid)
            if row is not None and row["ticket_delivered_at"] is None:
                row["ticket_delivered_at"] = now

        return self._run(do)

    def _sessions(self, keep, key, reverse=False, limit=None):
        rows = sorted((r for r in self.sessions.values() if keep(r)), key=key, reverse=reverse)
        return [dict(r) for r in rows[:limit]]

    def open_sessions(self):
        return self._run(lambda: self._sessions(lambda r: r["status"] == "open", lambda r: (r["started_at"], r["id"])))

    def get_session(self, sid):
        return self._run(lambda: dict(self.sessions[sid]) if sid in self.sessions else None)

    def undelivered_tickets(self, driver_id):
        def undelivered(r):
            return (r["driver_id"] == driver_id and r["status"] == "closed" and r["origin"] == "driver"
                    and r["ticket_delivered_at"] is None)

        return self._run(lambda: self._sessions(undelivered, lambda r: r["ended_at"]))

    @staticmethod
    def _page(rows, time_key, id_key, limit, before):
        """Newest first by (time, id), those before the cursor C{before}, at most C{limit}."""
        rows = sorted(rows, key=lambda r: (r[time_key], r[id_key]), reverse=True)
        if before is not None:
            rows = [r for r in rows if (r[time_key], r[id_key]) < tuple(before)]
        return [dict(r) for r in rows[: int(limit)]]

    def sessions_page(self, filters, limit, before=None):
        def keep(r):
            return (r["cp_id"] == filters.get("cp", r["cp_id"]) and r["driver_id"] == filters.get("driver", r["driver_id"])
                    and r["started_at"] >= filters.get("since", r["started_at"])
                    and ("until" not in filters or r["started_at"] < filters["until"]))

        return self._run(lambda: self._page([r for r in self.sessions.values() if keep(r)], "started_at", "id",
                                            limit, before))

    def drivers_page(self, limit, before=None):
        keys = ("driver_id", "status", "created_at", "updated_at")
        rows = [{k: r[k] for k in keys} for r in self.driver_accounts_rows.values()]
        return self._run(lambda: self._page(rows, "created_at", "driver_id", limit, before))

    def closed_since(self, since, exclude):
        def total():
            rows = [r for r in self.sessions.values()
                    if r["status"] == "closed" and r["ended_at"] >= since and r["id"] not in exclude]
            return {"energy_kwh": float(sum(r["kwh"] for r in rows)), "revenue_eur": float(sum(r["euros"] for r in rows)),
                    "sessions": len(rows)}

        return self._run(total)

    def recent_sessions(self, limit=50):
        return self._run(lambda: self._sessions(lambda r: True, lambda r: r["started_at"], True, int(limit)))

    # -- events

    def add_event(self, kind, subject, detail, at=None):
        at = self.now() if at is None else at

        def do():
            self.event_rows.append({"id": len(self.event_rows) + 1, "at": float(at), "kind": kind,
                                    "subject": subject[:64], "detail": detail[:1024]})

        return self._run(do)

    def recent_events(self, limit=100):
        return self._run(lambda: [dict(e) for e in reversed(self.event_rows)][: int(limit)])

    # -- the audit trail: the real store's SQL (evnet.central.audittrail) on an in-memory SQLite table

    def _audit_db(self):
        if getattr(self, "_audit", None) is None:
            self._audit = sqlite3.connect(":memory:")
            table = next(t for t in _TABLES if "TABLE IF NOT EXISTS audit " in t)
            self._audit.execute(table.format(autoincrement="INTEGER PRIMARY KEY AUTOINCREMENT"))
            for name, sql in _INDEXES:
                if name.startswith("audit_"):
                    self._audit.execute(sql)
        return self._audit

    def _audit_txn(self, fn, *args):
        db = self._audit_db()
        cursor = db.cursor()
        try:
            result = fn(cursor, False, *args)
        except Exception:
            db.rollback()
            raise
        db.commit()
        return result

    def append_audit(self, chain, key, entries):
        entries = list(entries)
        return self._run(lambda: self._audit_txn(audittrail.append_txn, chain, key, entries))

    def audit_rows(self, filters, limit, newest_first=True):
        filters = dict(filters)
        return self._run(lambda: self._audit_txn(audittrail.select_txn, filters, limit, newest_first))

    def audit_chains(self):
        """Every audit row by chain and seq (what evctl audit verify reads)."""
        return self._audit_txn(audittrail.chain_txn)


    # -- weather alerts

    def load_weather_alerts(self):
        return self._run(lambda: [dict(self.weather_alerts[k]) for k in sorted(self.weather_alerts)])

    def save_weather_alert(self, location, city, temperature, observed_at, raised_at, updated_at):
        def do():
            row = self.weather_alerts.setdefault(location, {"location": location, "raised_at": float(raised_at)})
            row.update(city=city, temperature=float(temperature), observed_at=float(observed_at),
                       updated_at=float(updated_at))

        return self._run(do)

    def delete_weather_alerts(self, locations):
        return self._run(lambda: sum(self.weather_alerts.pop(k, None) is not None for k in locations))


class Peer:
    """
    The far end of a FramedLink whose near end is the code under test:
    C{send} feeds a frame in, C{inbox} collects what the link sent out
    (each frame is ACKed, as a real peer would, unless C{auto_ack} is off).
    """

    _port = 40000

    def __init__(self, handler, clock, *, accepting_side=True, auto_ack=True, host="127.0.0.1"):
        Peer._port += 1
        self.link = FramedLink(handler, clock, initiator=not accepting_side)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, Peer._port))
        self.decoder = framing.FrameDecoder()
        self.auto_ack = auto_ack
        self.inbox = []
        self.frames = []  # the DATA of every frame received, as it came on the wire
        self.controls = []
        self.link.makeConnection(self.transport)
        if accepting_side:
            self.link.dataReceived(ENQ_BYTE)
        else:
            self.link.dataReceived(ACK_BYTE)
        self.pump()

    def pump(self):
        while True:
            data = self.transport.value()
            self.transport.clear()
            if not data:
                return
            for event in self.decoder.feed(data):
                if event.kind is Kind.FRAME:
                    self.frames.append(event.data)
                    self.inbox.append(self.decode(event.data))
                    if self.auto_ack:
                        self.link.dataReceived(ACK_BYTE)
                elif event.kind is Kind.CONTROL:
                    self.controls.append(event.control)

    def decode(self, data):
        return decode(data)

    def send(self, msg):
        self.link.dataReceived(frame_of(msg))
        self.pump()

    def take(self, kind=None):
        """Everything received since the last take (only messages of C{kind} if given)."""
        self.pump()
        got, self.inbox = self.inbox, []
        if kind is not None:
            got = [x for x in got if isinstance(x, kind)]
        return got

    def lose(self, why="connection lost"):
        self.link.connectionLost(Failure(ConnectionError(why)))


def secret_of(cp_id):
    """The secret the unit tests register CP C{cp_id} with (any Central of a test knows it)."""
    return f"secret-of-{cp_id}"


def verifier_of(secret):
    return security.make_verifier(secret, n=FAST_COST).to_text()


class Monitor(Peer):
    """
    An honest Monitor of CP C{cp_id} on a fake link to Central: L{login} with
    the CP's credentials (L{security.ClientLogin}); once it has a key,
    L{send} seals (role M) and what Central seals is opened (role C), so a
    test reads and writes plain messages.  A frame that does not open (a
    plain refusal) comes as it is.  L{record} is what its Engine (role E) or
    itself writes to Kafka.  L{send_plain} sends without sealing.
    """

    def __init__(self, handler, clock, cp_id, secret=None, **options):
        self.cp_id = cp_id
        self.secret = secret_of(cp_id) if secret is None else secret
        self.key_id = self.key = None
        self.sealer = self.opener = self.engine = None
        self._login = None  # the ClientLogin under way
        super().__init__(handler, clock, **options)

    def decode(self, data):
        msg = decode(data)
        if isinstance(msg, m.Sec) and self.opener is not None:
            try:
                msg = security.open_message(self.opener, msg)
            except security.SecurityError:
                return msg
        if isinstance(msg, m.Key) and self._login is not None:
            # As a Monitor does: the frames after KEY are under the new key.
            self.use(*self._login.accept(msg))
            self._login = None
        return msg

    def send(self, msg):
        if self.sealer is not None:
            msg = security.seal_message(self.sealer, msg)
        super().send(msg)

    def send_plain(self, msg):
        super().send(msg)

    def login(self, secret=None):
        """Log in (again, on a sealed link) as this CP; the KEY.  What came before stays in the inbox."""
        client = self._login = security.ClientLogin(self.cp_id, self.secret if secret is None else secret)
        self.send(client.start())
        self.send(client.answer(self.next(m.Challenge)))
        return self.next(m.Key)

    def next(self, kind):
        """The first message of C{kind} in the inbox, taken out of it."""
        self.pump()
        for i, msg in enumerate(self.inbox):
            if isinstance(msg, kind):
                return self.inbox.pop(i)
        raise AssertionError(f"{self.cp_id}'s Monitor got no {kind.code}: {self.inbox}")

    def use(self, key_id, key):
        self.key_id, self.key = key_id, key
        self.sealer = security.Sealer(self.cp_id, key_id, key, security.ROLE_MONITOR)
        self.engine = security.Sealer(self.cp_id, key_id, key, security.ROLE_ENGINE)
        self.opener = security.Opener(self.cp_id, key_id, key, (security.ROLE_CENTRAL,))

    def record(self, msg, role=security.ROLE_ENGINE):
        """C{msg} as a Kafka record's value, sealed by the Engine (or the Monitor) under the current key."""
        return security.seal_message(self.engine if role == security.ROLE_ENGINE else self.sealer, msg)


class RecordingHandler(LinkHandler):
    """A LinkHandler that records the link's events and messages (and refuses with C{refuse})."""

    def __init__(self, refuse=None):
        self.refuse = refuse
        self.events = []
        self.messages = []

    def linkRequested(self, link):
        self.events.append("requested")
        return self.refuse

    def linkOpened(self, link):
        self.events.append("opened")

    def linkRefused(self, link):
        self.events.append("refused")

    def messageReceived(self, link, msg):
        self.messages.append(msg)

    def linkLost(self, link, reason):
        self.events.append("lost")


def make_link(initiator, handler=None, clock=None, **options):
    """A FramedLink on a StringTransport: (link, transport, handler, clock)."""
    handler = handler or RecordingHandler()
    clock = clock or Clock()
    link = FramedLink(handler, clock, initiator=initiator, **options)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
    link.makeConnection(transport)
    return link, transport, handler, clock


def take(transport):
    """The bytes written to C{transport} since last asked."""
    data = transport.value()
    transport.clear()
    return data


def frame_of(msg):
    return encode_frame(msg.to_data())


class FakeStateWriter:
    """
    L{evnet.engine.statefile.StateWriter}'s interface without a thread: each
    save goes through the real StateFile at once, or, with C{hold=True},
    waits in C{held} until L{release} writes them in order (a failed write
    is a failed Deferred, as from the thread).
    """

    def __init__(self, store, hold=False):
        self.store = store
        self.hold = hold
        self.held = []
        self.running = False

    def start(self):
        self.running = True

    def stop(self):
        self.running = False

    def save(self, data):
        if self.hold:
            d = defer.Deferred()
            self.held.append((d, data))
            return d
        return defer.maybeDeferred(self.store.save, data)

    def release(self, count=None):
        """Write the first C{count} held snapshots (all by default), firing each one's Deferred."""
        count = len(self.held) if count is None else count
        todo, self.held = self.held[:count], self.held[count:]
        for d, data in todo:
            defer.maybeDeferred(self.store.save, data).chainDeferred(d)

    def drain(self):
        """Release until nothing is held (writes asked for while releasing too)."""
        while self.held:
            self.release()
