"""What evctl tells its user in one line on stderr, with an exit status; never a traceback."""

from __future__ import annotations


class EvctlError(Exception):
    """A failure explained in L{line}; evctl exits with L{exit_code}."""

    exit_code = 2

    def line(self) -> str:
        return f"evctl: {self}"


class UserError(EvctlError):
    """A mistake of the person running evctl, or what they named is out of reach: exit code 2."""


class CentralRefused(EvctlError):
    """Central answered with an error: exit code 1."""

    exit_code = 1

    def line(self) -> str:
        return f"evctl: Central refused: {self}"
