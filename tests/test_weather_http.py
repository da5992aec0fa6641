"""
EV_W's HTTP clients on real sockets: OpenWeather against a local
twisted.web server answering in OpenWeather's format (shapes recorded from
its API), Central's client against a fake Central.  Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from hypothesis import given, strategies as st
from twisted.internet import defer
from twisted.logger import capturedLogs, formatEvent
from twisted.web import resource, server

from evnet.weather.alerts import Alert
from evnet.weather.central import CentralClient, CentralError
from evnet.weather.openweather import OpenWeatherSource, read_answer
from evnet.weather.sources import WeatherError
from tests.network import within
from tests.weatherfakes import FakeCentralServer

KEY = "0123456789abcdef0123456789abcdef"


def current(name: str, temp: float) -> dict:
    """OpenWeather's answer to /data/2.5/weather?q=NAME&units=metric (as recorded, another city's numbers)."""
    return {
        "coord": {"lon": -0.4815, "lat": 38.3452},
        "weather": [{"id": 800, "main": "Clear", "description": "clear sky", "icon": "01n"}],
        "base": "stations",
        "main": {"temp": temp, "feels_like": temp - 2.1, "temp_min": temp - 1, "temp_max": temp + 1,
                 "pressure": 1021, "humidity": 71, "sea_level": 1021, "grnd_level": 1012},
        "visibility": 10000, "wind": {"speed": 2.57, "deg": 290}, "clouds": {"all": 0},
        "dt": 1764620000, "sys": {"type": 2, "id": 2012456, "country": "ES", "sunrise": 1764573000,
                                  "sunset": 1764609000},
        "timezone": 3600, "id": 2521978, "name": name, "cod": 200,
    }


class FakeOpenWeather(resource.Resource):
    """/data/2.5/weather as OpenWeather answers it, one behaviour per city name."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[dict] = []
        self.slow: list = []

    def render_GET(self, request):
        args = {k.decode(): v[0].decode() for k, v in request.args.items()}
        self.queries.append(dict(args, path=request.path.decode()))
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        city = args.get("q")
        if args.get("appid") != KEY:
            request.setResponseCode(401)
            return json.dumps({"cod": 401, "message": "Invalid API key. Please see "
                               "https://openweathermap.org/faq#error401 for more info."}).encode()
        if city == "Nowhere":
            request.setResponseCode(404)
            return b'{"cod":"404","message":"city not found"}'
        if city == "Busy":
            request.setResponseCode(429)
            request.setHeader(b"retry-after", b"30")
            return json.dumps({"cod": 429, "message": "Your account is temporary blocked due to exceeding of "
                               "requests limitation of your subscription type."}).encode()
        if city == "Garbage":
            return b"<html><body>502 Bad Gateway</body></html>"
        if city == "NoTemp":
            body = current(city, 1.0)
            del body["main"]["temp"]
            return json.dumps(body).encode()
        if city == "Slow":
            self.slow.append(request)
            return server.NOT_DONE_YET
        if city == "Broken":
            request.setResponseCode(503)
            return b""
        return json.dumps(current(city, {"Alicante": 17.3, "Teruel": -4.25}.get(city, 10.0))).encode()


class QuietSite(server.Site):
    """The test server's access log would hold the key (its query string); EV_W's own log must not."""

    noisy = False

    def log(self, request) -> None:
        pass


@pytest.fixture
def openweather():
    from twisted.internet import reactor

    fake = FakeOpenWeather()
    port = reactor.listenTCP(0, QuietSite(fake), interface="127.0.0.1")
    fake.url = f"http://127.0.0.1:{port.getHost().port}"
    yield fake
    for request in fake.slow:
        if not request.finished and not request._disconnected:
            request.finish()
    pytest_twisted.blockon(port.stopListening())


async def reading(source, city):
    try:
        return await within(source.temperature(city), 10, f"the weather for {city}")
    except WeatherError as e:
        return e


@pytest_twisted.ensureDeferred
async def test_openweather_answers_normal_below_zero_bad_key_unknown_city_rate_limit_nonsense(openweather):
    from twisted.internet import reactor

    source = OpenWeatherSource(reactor, KEY, openweather.url, timeout=5)
    with capturedLogs() as events:
        try:
            assert await reading(source, "Alicante") == 17.3
            assert await reading(source, "Teruel") == -4.25
            assert openweather.queries[0] == {"q": "Alicante", "units": "metric", "appid": KEY,
                                              "path": "/data/2.5/weather"}
            unknown = await reading(source, "Nowhere")
            assert unknown.text == "OpenWeather does not know this city (404: city not found)"
            busy = await reading(source, "Busy")
            assert busy.text == "OpenWeather limits the requests (429: too many requests)" and busy.retry_after == 30
            assert (await reading(source, "Garbage")).text == "OpenWeather's answer is not JSON"
            assert (await reading(source, "NoTemp")).text == "OpenWeather's answer has no temperature (main.temp)"
            assert (await reading(source, "Broken")).text == "OpenWeather answered 503 (no message)"
            bad = OpenWeatherSource(reactor, "wrong-key", openweather.url, timeout=5, web=source.web)
            refused = await reading(bad, "Alicante")
            assert refused.text.startswith("OpenWeather refuses the API key (401: Invalid API key.")
        finally:
            await source.close()
    assert [formatEvent(e) for e in events if KEY in formatEvent(e) or "wrong-key" in formatEvent(e)] == []


@pytest_twisted.ensureDeferred
async def test_a_slow_openweather_is_given_up_after_the_timeout_and_a_dead_one_is_one_line(openweather):
    from twisted.internet import reactor

    source = OpenWeatherSource(reactor, KEY, openweather.url, timeout=0.5)
    try:
        slow = await reading(source, "Slow")
        assert slow.text == f"no answer from OpenWeather at {openweather.url} within 0.5 s"
        assert openweather.slow  # the server did get the request
    finally:
        await source.close()
    port = reactor.listenTCP(0, server.Site(resource.Resource()), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}"
    await port.stopListening()  # nobody listens there now
    dead = OpenWeatherSource(reactor, KEY, url, timeout=5)
    try:
        assert (await reading(dead, "Alicante")).text == f"cannot connect to OpenWeather at {url}: connection refused"
    finally:
        await dead.close()


def test_an_error_message_echoing_the_key_has_it_masked():
    body = json.dumps({"cod": 401, "message": f"key {KEY} is not activated"}).encode()
    with pytest.raises(WeatherError) as caught:
        read_answer(401, body, {}, 0.0, KEY)
    assert KEY not in caught.value.text and "key … is not activated" in caught.value.text


def test_a_200_whose_body_says_404_counts_as_404():
    with pytest.raises(WeatherError, match="does not know this city"):
        read_answer(200, b'{"cod":"404","message":"city not found"}', {}, 0.0)


@given(st.integers(100, 599), st.binary(max_size=200))
def test_any_answer_is_a_temperature_or_a_weather_error(status, body):
    try:
        assert isinstance(read_answer(status, body, {"retry-after": "x"}, 0.0, KEY), float)
    except WeatherError:
        pass


@pytest.fixture
def fake_central():
    fake = FakeCentralServer(["Alicante Centro", "Elche", "Alicante Centro", ""], token="ev-w-token")
    yield fake
    fake.close()


@pytest_twisted.ensureDeferred
async def test_the_central_client_speaks_the_contract(fake_central):
    from twisted.internet import reactor

    client = CentralClient(reactor, fake_central.url, "ev-w-token", timeout=5)
    try:
        assert await within(client.locations(), 10, "locations") == ["Alicante Centro", "Elche"]
        await within(client.raise_alert(Alert("Alicante Centro", "Alicante", -1.5, 1764620000.0)), 10, "POST")
        await within(client.clear_alert("Alicante Centro"), 10, "DELETE")
        await within(client.health({"at": 1.0, "interval": 4.0, "cities": 2, "failing": []}), 10, "PUT")
    finally:
        await client.close()
    [post], [delete], [put] = (fake_central.seen(m) for m in ("POST", "DELETE", "PUT"))
    assert post["path"] == "/api/v1/weather/alerts" and post["auth"] == "Bearer ev-w-token"
    assert post["body"] == {"location": "Alicante Centro", "city": "Alicante", "temperature": -1.5,
                            "observed_at": 1764620000.0}
    assert delete["path"] == "/api/v1/weather/alerts/Alicante%20Centro" and delete["location"] == "Alicante Centro"
    assert put["path"] == "/api/v1/weather/health" and put["body"]["cities"] == 2


@pytest_twisted.ensureDeferred
async def test_a_refused_token_and_a_central_that_is_not_there_are_one_line_each(fake_central):
    from twisted.internet import reactor

    client = CentralClient(reactor, fake_central.url, "stolen", timeout=5)
    try:
        with pytest.raises(CentralError) as refused:
            await within(client.health({}), 10, "PUT")
        assert refused.value.text == "Central refuses EV_W's token (401: this needs EV_W's token)"
        assert refused.value.status == 401
    finally:
        await client.close()
    fake_central.close()
    client = CentralClient(reactor, fake_central.url, "ev-w-token", timeout=5)
    try:
        with pytest.raises(CentralError, match=f"cannot connect to Central at {fake_central.url}: connection refused"):
            await within(client.raise_alert(Alert("Elche", "Elche", -1, 1)), 10, "POST")
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_clearing_an_alert_central_does_not_hold_counts_as_cleared():
    from twisted.internet import reactor

    class NotFound(resource.Resource):
        isLeaf = True

        def render(self, request):
            request.setResponseCode(404)
            return b'{"error":"no such alert"}'

    port = reactor.listenTCP(0, server.Site(NotFound()), interface="127.0.0.1")
    client = CentralClient(reactor, f"http://127.0.0.1:{port.getHost().port}", timeout=5)
    try:
        assert await within(client.clear_alert("Elche"), 10, "DELETE") == {"ok": True, "cleared": False}
        with pytest.raises(CentralError, match=r"Central answered 404 to POST /api/v1/weather/alerts \(no such alert\)"):
            await within(client.raise_alert(Alert("Elche", "Elche", -1, 1)), 10, "POST")
    finally:
        await client.close()
        await port.stopListening()
