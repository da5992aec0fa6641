"""
OpenWeather's current-weather API as an L{IWeatherSource}:
``GET {base}/data/2.5/weather?q=City&units=metric&appid=KEY`` with treq.

The API key goes in the query string because that is OpenWeather's API, so
the request's URL is a secret: nothing here logs it or puts it in an error
(errors name only the base URL), and an answer that echoes the key has it
masked.  L{read_answer} is the pure part: an HTTP answer in, a temperature
or a L{WeatherError} out.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional
from urllib.parse import urlencode, urlsplit

from twisted.internet import defer
from zope.interface import implementer

from evnet.weather.http import WebClient, why_no_answer
from evnet.weather.sources import IWeatherSource, WeatherError, retry_after

DEFAULT_URL = "https://api.openweathermap.org"
PATH = "/data/2.5/weather"
DEFAULT_TIMEOUT = 5.0


def check_base_url(url: str) -> str:
    """C{url} without its trailing slash; ValueError unless it is http(s)://HOST[:PORT][/path]."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"expected a base URL like {DEFAULT_URL}, not {url!r}")
    parts.port  # noqa: B018 -- raises ValueError for a bad port
    return url.rstrip("/")


def _message(data: Any, key: str) -> str:
    """OpenWeather's own sentence in an error answer, on one short line, the key masked."""
    text = data.get("message") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        return "no message"
    text = " ".join(text.split())[:160]
    return text.replace(key, "…") if key else text


def read_answer(status: int, body: bytes, headers: dict[str, str], now: float, key: str = "") -> float:
    """
    The temperature in an answer of OpenWeather (HTTP C{status}, C{body},
    C{headers} with lower-case names), or a L{WeatherError} saying what is
    wrong with it.  OpenWeather sometimes says its error in the body's
    C{cod} with a 200 status: that counts as the status.
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        data = None
    cod = str(data.get("cod")) if isinstance(data, dict) else ""
    if status == 200 and cod.isdigit() and int(cod) >= 400:
        status = int(cod)
    if status == 401:
        raise WeatherError(f"OpenWeather refuses the API key (401: {_message(data, key)})")
    if status == 404:
        raise WeatherError(f"OpenWeather does not know this city (404: {_message(data, key)})")
    if status == 429:
        raise WeatherError("OpenWeather limits the requests (429: too many requests)",
                           retry_after(headers.get("retry-after"), now))
    if status != 200:
        raise WeatherError(f"OpenWeather answered {status} ({_message(data, key)})")
    if data is None:
        raise WeatherError("OpenWeather's answer is not JSON")
    main = data.get("main") if isinstance(data, dict) else None
    temp = main.get("temp") if isinstance(main, dict) else None
    if not isinstance(temp, (int, float)) or isinstance(temp, bool) or not math.isfinite(temp):
        raise WeatherError("OpenWeather's answer has no temperature (main.temp)")
    return float(temp)


@implementer(IWeatherSource)
class OpenWeatherSource:
    """
    Current temperatures from OpenWeather at C{base_url} with C{api_key};
    each request is given up after C{timeout} seconds (from the request to
    the end of the answer).  C{web}: the L{WebClient} to use (made if None).
    """

    def __init__(self, reactor: Any, api_key: str, base_url: str = DEFAULT_URL,
                 timeout: float = DEFAULT_TIMEOUT, web: Optional[WebClient] = None) -> None:
        self.reactor = reactor
        self._key = api_key
        self.base_url = check_base_url(base_url)
        self.name = f"OpenWeather at {self.base_url}"
        self.timeout = timeout
        self.web = web if web is not None else WebClient(reactor, timeout=timeout)

    def __repr__(self) -> str:  # never the key in a log or a traceback
        return f"<OpenWeatherSource {self.base_url} key=...>"

    def temperature(self, city: str) -> defer.Deferred:
        d = defer.ensureDeferred(self._get(city))
        d.addTimeout(self.timeout, self.reactor)
        return d.addErrback(self._explain)

    async def _get(self, city: str) -> float:
        query = urlencode({"q": city, "units": "metric", "appid": self._key})
        response = await self.web.http.get(f"{self.base_url}{PATH}?{query}", headers={b"Accept": [b"application/json"]},
                                           allow_redirects=False)
        body = await response.content()
        headers = {name.decode("latin-1").lower(): values[-1].decode("latin-1")
                   for name, values in response.headers.getAllRawHeaders()}
        return read_answer(response.code, body, headers, self.reactor.seconds(), self._key)

    def _explain(self, failure: Any) -> Any:
        if failure.check(WeatherError):
            return failure
        raise WeatherError(why_no_answer(failure.value, self.name, self.timeout))

    def close(self) -> defer.Deferred:
        return self.web.close()
