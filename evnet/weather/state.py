"""
EV_W's state file, ``STATE-DIR/weather-state.json``: the cities its
operator added and the alerts Central has taken, so that both survive a
restart (an alert Central holds is cleared when its city thaws, even after
EV_W restarted).  Written atomically: a temp file, fsync, rename.

    {"version": 1, "cities": ["Elche"],
     "alerts": [{"location": "Alicante Centro", "city": "Alicante",
                 "temperature": -1.5, "observed_at": 1764620000.0}]}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Iterable

from evnet.registry.credentials import write_private_file
from evnet.weather.alerts import Alert
from evnet.weather.cities import BadName, clean_name

STATE_FILE_NAME = "weather-state.json"
VERSION = 1


class StateError(Exception):
    """The state file cannot be read; the text says which and why."""


@dataclass
class Saved:
    cities: list[str] = field(default_factory=list)
    alerts: dict[str, Alert] = field(default_factory=dict)


class StateFile:
    """The state file in C{directory}."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, STATE_FILE_NAME)

    def load(self) -> Saved:
        """What was saved (nothing on a first start); L{StateError} when the file is unusable."""
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return Saved()
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise StateError(f"cannot read the state file {self.path}: {getattr(e, 'strerror', None) or e}") from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise StateError(f"the state file {self.path} is not an evweather state file (version {VERSION})")
        try:
            cities = [clean_name(city) for city in data.get("cities", [])]
            alerts = [Alert.from_body(body) for body in data.get("alerts", [])]
        except (BadName, ValueError, TypeError, AttributeError) as e:
            raise StateError(f"the state file {self.path} cannot be restored: {e}") from None
        return Saved(list(dict.fromkeys(cities)), {alert.location: alert for alert in alerts})

    def save(self, cities: Iterable[str], alerts: Iterable[Alert]) -> None:
        data = {"version": VERSION, "cities": list(cities),
                "alerts": [alert.body() for alert in sorted(alerts, key=lambda a: a.location)]}
        write_private_file(self.path, json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8"), 0o644)
