"""
The explicit state machines of Central: a charging point's state and a
charge session's state, as tables for L{evnet.protocols.machine.Machine}
(evnet's one machine idiom).  Pure: no I/O, no Twisted.  An input a
machine does not allow in its current state raises L{IllegalTransition};
callers log it and carry on, they never crash on it.
"""

from __future__ import annotations

from enum import Enum

from evnet.protocols.machine import Machine


class CpState(str, Enum):
    ACTIVADO = "ACTIVADO"
    PARADO = "PARADO"
    SUMINISTRANDO = "SUMINISTRANDO"
    AVERIADO = "AVERIADO"
    DESCONECTADO = "DESCONECTADO"


class CpInput(str, Enum):
    ONLINE = "online"  # the Monitor authenticated and reports
    FAULT = "fault"  # AVR, or STATUS with the Engine KO
    RECOVER = "recover"  # RCV, or STATUS with the Engine OK
    CHARGE_START = "charge-start"
    CHARGE_END = "charge-end"
    STOP = "stop"  # PARAR from the operator
    RESUME = "resume"  # REANUDAR from the operator
    OFFLINE = "offline"  # link lost or liveness timeout
    WEATHER_ALERT = "weather-alert"  # EV_W raised an alert on the CP's location
    WEATHER_CLEAR = "weather-clear"  # that alert is over


# Sentinel target: the state a CP idles in, given its flags.
IDLE = "idle"

_CP_TABLE: dict[tuple[CpState, CpInput], object] = {
    (CpState.DESCONECTADO, CpInput.ONLINE): IDLE,
    (CpState.DESCONECTADO, CpInput.STOP): CpState.DESCONECTADO,
    (CpState.DESCONECTADO, CpInput.RESUME): CpState.DESCONECTADO,
    (CpState.DESCONECTADO, CpInput.OFFLINE): CpState.DESCONECTADO,
    (CpState.ACTIVADO, CpInput.FAULT): CpState.AVERIADO,
    (CpState.ACTIVADO, CpInput.RECOVER): CpState.ACTIVADO,
    (CpState.ACTIVADO, CpInput.CHARGE_START): CpState.SUMINISTRANDO,
    (CpState.ACTIVADO, CpInput.STOP): CpState.PARADO,
    (CpState.ACTIVADO, CpInput.OFFLINE): CpState.DESCONECTADO,
    (CpState.SUMINISTRANDO, CpInput.FAULT): CpState.AVERIADO,
    (CpState.SUMINISTRANDO, CpInput.RECOVER): CpState.SUMINISTRANDO,
    (CpState.SUMINISTRANDO, CpInput.CHARGE_END): IDLE,
    (CpState.SUMINISTRANDO, CpInput.STOP): CpState.PARADO,
    (CpState.SUMINISTRANDO, CpInput.OFFLINE): CpState.DESCONECTADO,
    (CpState.AVERIADO, CpInput.FAULT): CpState.AVERIADO,
    (CpState.AVERIADO, CpInput.RECOVER): CpState.ACTIVADO,
    (CpState.AVERIADO, CpInput.STOP): CpState.PARADO,
    (CpState.AVERIADO, CpInput.OFFLINE): CpState.DESCONECTADO,
    (CpState.AVERIADO, CpInput.CHARGE_END): CpState.AVERIADO,
    (CpState.PARADO, CpInput.FAULT): CpState.PARADO,
    (CpState.PARADO, CpInput.RECOVER): CpState.PARADO,
    (CpState.PARADO, CpInput.STOP): CpState.PARADO,
    (CpState.PARADO, CpInput.RESUME): IDLE,
    (CpState.PARADO, CpInput.OFFLINE): CpState.DESCONECTADO,
    (CpState.PARADO, CpInput.CHARGE_END): CpState.PARADO,
    # A weather alert rests the CP in PARADO like the operator's stop, as a fact of its own
    # (CpMachine.weather_alert): it comes back only once neither holds it.
    (CpState.DESCONECTADO, CpInput.WEATHER_ALERT): CpState.DESCONECTADO,
    (CpState.DESCONECTADO, CpInput.WEATHER_CLEAR): CpState.DESCONECTADO,
    (CpState.ACTIVADO, CpInput.WEATHER_ALERT): CpState.PARADO,
    (CpState.SUMINISTRANDO, CpInput.WEATHER_ALERT): CpState.PARADO,
    (CpState.AVERIADO, CpInput.WEATHER_ALERT): CpState.PARADO,
    (CpState.PARADO, CpInput.WEATHER_ALERT): CpState.PARADO,
    (CpState.PARADO, CpInput.WEATHER_CLEAR): IDLE,
}


class CpMachine(Machine):
    """
    A CP's state at Central.  Besides the state it keeps three facts that
    decide where an idle CP rests: whether the operator stopped it (PARADO
    survives disconnections and restarts), whether a weather alert holds its
    location (PARADO too, for as long as the alert lasts, whatever the
    operator does) and whether its Engine is healthy.  The table's L{IDLE}
    target means "wherever those facts say".
    """

    def __init__(self, state: CpState = CpState.DESCONECTADO, stopped: bool = False, engine_ok: bool = True,
                 weather_alert: bool = False):
        super().__init__("CP", _CP_TABLE, state)  # type: ignore[arg-type]
        self.stopped = stopped
        self.engine_ok = engine_ok
        self.weather_alert = weather_alert

    @property
    def out_of_service(self) -> bool:
        """Held in PARADO: stopped by the operator or under a weather alert."""
        return self.stopped or self.weather_alert

    def idle_state(self) -> CpState:
        if self.out_of_service:
            return CpState.PARADO
        return CpState.ACTIVADO if self.engine_ok else CpState.AVERIADO

    def fire(self, event: CpInput) -> CpState:
        """Apply C{event}; return the new state or raise L{IllegalTransition}."""
        before = self.state
        super().fire(event)
        if event is CpInput.FAULT:
            self.engine_ok = False
        elif event is CpInput.RECOVER:
            self.engine_ok = True
        elif event is CpInput.STOP:
            self.stopped = True
        elif event is CpInput.RESUME:
            self.stopped = False
        elif event is CpInput.WEATHER_ALERT:
            self.weather_alert = True
        elif event is CpInput.WEATHER_CLEAR:
            self.weather_alert = False
        if self.state is IDLE:
            self.state = self.idle_state()
        self.changed = self.state is not before
        return self.state


class SessionState(str, Enum):
    AUTHORIZED = "authorized"  # START sent, waiting for the vehicle
    SUPPLYING = "supplying"  # telemetry flows
    CLOSED = "closed"


class SessionInput(str, Enum):
    TELEMETRY = "telemetry"
    END = "end"


_SESSION_TABLE = {
    (SessionState.AUTHORIZED, SessionInput.TELEMETRY): SessionState.SUPPLYING,
    (SessionState.AUTHORIZED, SessionInput.END): SessionState.CLOSED,
    (SessionState.SUPPLYING, SessionInput.TELEMETRY): SessionState.SUPPLYING,
    (SessionState.SUPPLYING, SessionInput.END): SessionState.CLOSED,
}


class SessionMachine(Machine):
    def __init__(self, state: SessionState = SessionState.AUTHORIZED):
        super().__init__("session", _SESSION_TABLE, state)
