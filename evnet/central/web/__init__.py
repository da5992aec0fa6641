"""
Central's panel over HTTP (twisted.web), one concern a module:

- L{routes}: API_Central v1's route table (C{/api/v1/...}) and the 308 redirects of the old C{/api/...} paths;
- L{api}: who may write, the commands' handlers (JSON under C{/api});
- L{reads}: the lists and totals (drivers, sessions, messages, audit, alerts, summary), paged by L{filters};
- L{summary}: the network's totals;
- L{sse}: the Server-Sent Events hub behind C{/api/v1/stream};
- L{views}: Central's CPs, charges and messages as the JSON both of them say;
- L{openapi}: the OpenAPI document served at C{/api/v1/openapi.json};
- L{dashboard}: the dashboard's files (the C{static/} folder) at C{/}, the API at C{/api};
- L{service}: L{WebPanel}, the service Central gets as a child, and L{make_site}.
"""

from evnet.central.web.api import ROUTES, Api, Route
from evnet.httpapi import ApiError
from evnet.central.web.openapi import OPENAPI
from evnet.central.web.service import WebPanel, make_site
from evnet.central.web.sse import EventHub, SseClient

__all__ = ["OPENAPI", "ROUTES", "Api", "ApiError", "EventHub", "Route", "SseClient", "WebPanel", "make_site"]
