"""EV_W's files: names, the locations file, the local weather source, the state file."""

from __future__ import annotations

import json
import os

import pytest
from twisted.logger import capturedLogs, formatEvent

from evnet.weather.alerts import Alert
from evnet.weather.cities import BadName, clean_name, parse_locations, parse_temperatures
from evnet.weather.sources import LocalSource, WeatherError, retry_after
from evnet.weather.state import StateError, StateFile


def test_names_have_their_spaces_collapsed_and_no_separator():
    assert clean_name("  San   Vicente del Raspeig ") == "San Vicente del Raspeig"
    for bad in ("", "   ", "a = b", "a | b", "tab\x07", "x" * 81):
        with pytest.raises(BadName):
            clean_name(bad)


def test_the_locations_file_maps_locations_to_cities_and_names_a_bad_line():
    mapping, problems = parse_locations("# CP locations\nAlicante Centro = Alicante\n\nPuerto=Alicante\nnonsense\n")
    assert mapping == {"Alicante Centro": "Alicante", "Puerto": "Alicante"}
    assert [p.told("loc.txt") for p in problems] == [
        "loc.txt line 5: expected 'location = City name', not 'nonsense'"]


def test_the_temperatures_file_skips_each_bad_line_with_its_number():
    text = "Alicante = -1.5\nElche = warm\n = 3\nMadrid=12\nTeruel = nan\n# Soria = 1\n"
    temperatures, problems = parse_temperatures(text)
    assert temperatures == {"Alicante": -1.5, "Madrid": 12.0}
    assert [(p.line, p.why) for p in problems] == [
        (2, "'warm' is not a temperature in °C"),
        (3, "expected 'City = temperature (e.g. Alicante = -1.5)', not '= 3'"),
        (5, "'nan' is not a temperature in °C"),
    ]


def test_the_local_source_reads_the_file_again_at_each_call_and_tells_a_bad_line_once(tmp_path):
    path = tmp_path / "weather.txt"
    path.write_text("Alicante = 4\nElche = ?\n")
    source = LocalSource(str(path))
    with capturedLogs() as events:
        assert source.temperature("Alicante").result == 4.0
        assert source.temperature("Alicante").result == 4.0
    assert [formatEvent(e) for e in events] == [f"{path} line 2: '?' is not a temperature in °C (line skipped)"]
    failure = source.temperature("Elche")
    assert isinstance(failure.result.value, WeatherError)
    assert failure.result.value.text == f"the local weather file {path} has no line for Elche"
    failure.addErrback(lambda f: None)
    path.write_text("Alicante = -2\nElche = 1\n")  # a script makes it freeze
    assert source.temperature("Alicante").result == -2.0
    path.unlink()
    gone = source.temperature("Alicante")
    assert gone.result.value.text == f"cannot read the local weather file {path}: No such file or directory"
    gone.addErrback(lambda f: None)


def test_retry_after_takes_seconds_or_a_date_and_caps_them():
    assert retry_after("30", 0.0) == 30.0
    assert retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0
    assert retry_after("99999", 0.0) == 3600.0
    assert retry_after("soon", 0.0) is None and retry_after(None, 0.0) is None


def test_the_state_file_keeps_the_cities_and_alerts_and_is_replaced_whole(tmp_path):
    store = StateFile(str(tmp_path))
    assert store.load().cities == [] and store.load().alerts == {}
    alert = Alert("Alicante Centro", "Alicante", -1.5, 1764620000.0)
    store.save(["Elche", "Madrid"], [alert])
    saved = store.load()
    assert saved.cities == ["Elche", "Madrid"] and saved.alerts == {"Alicante Centro": alert}
    assert sorted(os.listdir(tmp_path)) == ["weather-state.json"]  # no temp file left


@pytest.mark.parametrize("content, why", [
    ("{", "cannot read the state file"),
    ('{"version": 9}', "is not an evweather state file"),
    ('{"version": 1, "cities": ["a = b"]}', "cannot be restored"),
    ('{"version": 1, "alerts": [{"location": "X"}]}', "cannot be restored"),
])
def test_a_state_file_that_cannot_be_restored_says_so(tmp_path, content, why):
    (tmp_path / "weather-state.json").write_text(content)
    with pytest.raises(StateError, match=why):
        StateFile(str(tmp_path)).load()


def test_the_state_file_is_json_a_person_can_read(tmp_path):
    StateFile(str(tmp_path)).save(["Elche"], [])
    assert json.loads((tmp_path / "weather-state.json").read_text()) == {"version": 1, "cities": ["Elche"], "alerts": []}
