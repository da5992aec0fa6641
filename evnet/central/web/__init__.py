"""
Central's panel over HTTP (twisted.web), one concern a module:

- L{api}: the route table, who may write, one handler per route (JSON under C{/api});
- L{sse}: the Server-Sent Events hub behind C{/api/stream};
- L{views}: Central's CPs, charges and messages as the JSON both of them say;
- L{openapi}: the OpenAPI document served at C{/api/openapi.json};
- L{dashboard}: the dashboard's files (the C{static/} folder) at C{/}, the API at C{/api};
- L{service}: L{WebPanel}, the service Central gets as a child, and L{make_site}.
"""

from evnet.central.web.api import ROUTES, Api, Route
from evnet.httpapi import ApiError
from evnet.central.web.openapi import OPENAPI
from evnet.central.web.service import WebPanel, make_site
from evnet.central.web.sse import EventHub, SseClient

__all__ = ["OPENAPI", "ROUTES", "Api", "ApiError", "EventHub", "Route", "SseClient", "WebPanel", "make_site"]
