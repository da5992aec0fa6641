"""
L{WebPanel}: the HTTP face of Central as a service, the one Central gets
as a child (so it starts once Central's state is loaded): the event hub,
and the site listening on the C{--http} endpoint.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.application import service, strports
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import server

from evnet.central.web.api import Api
from evnet.central.web.sse import EventHub
from evnet.central.web.static import Root


class _QuietSite(server.Site):
    """A Site that keeps HTTP access lines out of Central's event log."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


def make_site(central: Any, hub: EventHub, reactor: IReactorTime, token: Optional[str] = None) -> server.Site:
    """The dashboard and the API over C{central}, its stream fed by C{hub}."""
    site = _QuietSite(Root(Api(central, hub, token)), reactor=reactor)
    site.displayTracebacks = False
    return site


class WebPanel(service.MultiService):
    """The HTTP face of Central: a child of the Central service (so it starts once the state is loaded)."""

    log = Logger()

    def __init__(self, central: Any, endpoint: str, reactor: IReactorTime, token: Optional[str] = None) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.hub = EventHub(central, reactor)
        self.hub.setServiceParent(self)
        self.site = make_site(central, self.hub, reactor, token)
        self.token = token
        strports.service(endpoint, self.site).setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self.log.info(
            "web panel and API on {endpoint} (write calls: {auth})",
            endpoint=self.endpoint,
            auth="admin token required" if self.token else "loopback only",
        )
