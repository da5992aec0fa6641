"""
L{WebPanel}: the HTTP face of Central as a service, the one Central gets
as a child (so it starts once Central's state is loaded): the event hub,
and the site listening on the C{--http} endpoint.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import server

from evnet.central.web.api import Api
from evnet.central.web.sse import EventHub
from evnet.central.web.dashboard import Root
from evnet.endpoints import Listener


class _QuietSite(server.Site):
    """A Site that keeps HTTP access lines out of Central's event log."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


def make_site(central: Any, hub: EventHub, reactor: IReactorTime, token: Optional[str] = None,
              weather_token: Optional[str] = None) -> server.Site:
    """The dashboard and the API over C{central}, its stream fed by C{hub}."""
    site = _QuietSite(Root(Api(central, hub, token, weather_token)), reactor=reactor)
    site.displayTracebacks = False
    return site


class WebPanel(service.MultiService):
    """
    Central's panel on the C{--http} endpoint string C{endpoint}.  When it
    cannot listen (the port is taken...) it logs one line and calls
    C{on_failure(text)}, as L{Listener} does; the rest of Central runs on.
    """

    log = Logger()

    def __init__(self, central: Any, endpoint: str, reactor: IReactorTime, token: Optional[str] = None,
                 on_failure: Optional[Callable[[str], None]] = None, weather_token: Optional[str] = None) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.token = token
        self.hub = EventHub(central, reactor)
        self.hub.setServiceParent(self)
        self.weather_token = weather_token
        self.site = make_site(central, self.hub, reactor, token, weather_token)
        self.listener = Listener("http", endpoint, self.site, reactor, on_failure)
        self.listener.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self.listener.listening.addCallback(self._listening)

    def _listening(self, port: Any) -> None:
        if port is not None:
            self.log.info(
                "web panel and API on {endpoint} (write calls: {auth}; weather calls: {weather})",
                endpoint=self.endpoint,
                auth="admin token required" if self.token else "loopback only",
                weather="EV_W's token required" if self.weather_token else "refused (no --weather-token-file)",
            )
