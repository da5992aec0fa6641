"""
The API's reads that are lists or totals, one handler per route, mixed
into L{evnet.central.web.api.Api}: the drivers' accounts and the stored
sessions (filtered, paged by a cursor, newest first), the application
messages, the audit trail, the alerts, the network's totals, EV_W's view
and the OpenAPI document.  Each reads Central's public attributes or asks
its store (the answer is a Deferred); a bad parameter is a 400.
"""

from __future__ import annotations

import re
from typing import Any

from evnet.central import audit, audittrail
from evnet.central.web import filters
from evnet.central.web.openapi import OPENAPI
from evnet.central.web.summary import network_summary
from evnet.central.web.views import DEFAULT_LIMIT, MAX_LIMIT, event_row, ongoing_sessions, session_row
from evnet.httpapi import ApiError

AUDIT_FILTERS = ("actor", "action", "outcome", "address", "since", "until", "chain", "before")


class Reads:
    central: Any

    def list_drivers(self, request):
        """A page of the drivers' accounts at EV_Registry (never a verifier), with whether each is connected and charging."""
        central = self.central
        size = filters.limit(request, DEFAULT_LIMIT, MAX_LIMIT)
        before = filters.cursor(request)

        def shown(rows):
            drivers = []
            for row in rows:
                session = central.driver_sessions.get(row["driver_id"])
                drivers.append({**row, "connected": row["driver_id"] in central.driver_links,
                                "session_id": session.id if session else None})
            return {"drivers": drivers, "driver_auth": central.drivers.mode,
                    "next": filters.next_cursor(rows, size, "created_at", "driver_id")}

        return central.store.drivers_page(size, before).addCallback(shown)

    def sessions(self, request):
        """The charges open now and a page of the stored ones, newest first, both filtered."""
        wanted = {}
        for name, what in (("cp", "CP"), ("driver", "driver")):
            value = filters.an_id(request, name, what)
            if value is not None:
                wanted[name] = value
        for name in ("since", "until"):
            value = filters.seconds(request, name)
            if value is not None:
                wanted[name] = value
        size = filters.limit(request, DEFAULT_LIMIT, MAX_LIMIT)
        before = filters.cursor(request)
        ongoing = [s for s in ongoing_sessions(self.central)
                   if s["cp_id"] == wanted.get("cp", s["cp_id"]) and s["driver_id"] == wanted.get("driver", s["driver_id"])]

        def page(rows):
            return {"ongoing": ongoing, "recent": [session_row(r) for r in rows],
                    "next": filters.next_cursor(rows, size, "started_at", "id")}

        return self.central.store.sessions_page(wanted, size, before).addCallback(page)

    def events(self, request):
        size = filters.limit(request, DEFAULT_LIMIT, MAX_LIMIT)
        d = self.central.store.recent_events(size)
        return d.addCallback(lambda rows: {"events": [event_row(r) for r in rows]})

    def alerts(self, request):
        return {"alerts": self.central.alerts.view()}

    def summary(self, request):
        return network_summary(self.central)

    def weather(self, request):
        return self.central.weather.view()

    def openapi(self, request):
        return OPENAPI

    def audit_trail(self, request):
        """The audit trail, newest first, filtered and paged (C{before}: the C{next} of the page before)."""
        wanted = {}
        for name in AUDIT_FILTERS:
            value = filters.arg(request, name)
            if value is not None:
                wanted[name] = value
        if "actor" in wanted:
            wanted["actor"] = filters.final_newline_off(wanted["actor"])
        for name, allowed in (("outcome", audit.OUTCOMES), ("chain", (audit.CHAIN_CENTRAL, audit.CHAIN_REGISTRY))):
            if name in wanted and wanted[name] not in allowed:
                raise ApiError(400, f"{name} must be one of {', '.join(allowed)}, not {wanted[name]!r}")
        if "before" in wanted and not (re.fullmatch("[0-9]{1,19}", wanted["before"])
                                        and int(wanted["before"]) <= 2**63 - 1):
            raise ApiError(400, f"before must be a row id (the 'next' of a page), not {wanted['before']!r}")
        limit = filters.limit(request, audittrail.DEFAULT_PAGE, audittrail.MAX_PAGE)
        try:
            audittrail.where(wanted)
        except audit.AuditError as e:
            raise ApiError(400, str(e)) from None
        d = self.central.store.audit_rows(wanted, limit)

        def page(rows):
            shown = [audittrail.shown(r) for r in rows]
            return {"rows": shown, "next": shown[-1]["id"] if len(shown) == limit else None}

        return d.addCallback(page)
