"""The table machine every evnet state machine is made of."""

from enum import Enum

import pytest
from twisted.logger import Logger, capturedLogs, formatEvent

from evnet.protocols.machine import IllegalTransition, Machine


class Door(str, Enum):
    OPEN = "open"
    SHUT = "shut"


class Push(str, Enum):
    OPEN = "open it"
    SHUT = "shut it"


TABLE = {(Door.SHUT, Push.OPEN): Door.OPEN, (Door.OPEN, Push.SHUT): Door.SHUT}


def test_fire_follows_the_table_and_refuses_what_it_does_not_list():
    door = Machine("the door", TABLE, Door.SHUT)
    assert door.can(Push.OPEN) and not door.can(Push.SHUT)
    assert door.fire(Push.OPEN) is Door.OPEN and door.state is Door.OPEN
    with pytest.raises(IllegalTransition) as e:
        door.fire(Push.OPEN)
    assert str(e.value) == "the door: open it is not allowed when open"
    assert door.state is Door.OPEN  # nothing changed


def test_attempt_logs_an_illegal_input_and_changes_nothing():
    door = Machine("the door", TABLE, Door.SHUT)
    with capturedLogs() as events:
        assert door.attempt(Push.SHUT, Logger()) is False
        assert door.attempt(Push.OPEN, Logger()) is True
    assert [formatEvent(e) for e in events] == ["the door: shut it is not allowed when shut; ignored"]
    assert door.state is Door.OPEN
