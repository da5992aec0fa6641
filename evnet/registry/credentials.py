"""
A charging point's credentials file, and writing private files.

The credentials file is JSON ``{"cp_id", "secret", "registry"}``, written
atomically (a new file renamed over the old one) with mode 0600; the loader
refuses a file that its group or others may read, since whoever reads the
secret can log in as the CP.  No Twisted here: the Monitor, evctl and the
tests all use it.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import dataclass

from evnet.protocols.vocabulary import ID_RULE, valid_id


class CredentialsError(Exception):
    """A credentials file cannot be used; the text says what to do."""


@dataclass(frozen=True)
class Credentials:
    cp_id: str
    secret: str
    registry: str  # the Registry's URL that issued them

    def __repr__(self) -> str:  # never the secret in a log or a traceback
        return f"Credentials(cp_id={self.cp_id!r}, registry={self.registry!r}, secret=...)"


def write_private_file(path: str, data: bytes, mode: int = 0o600) -> None:
    """
    Write C{data} to C{path} atomically: a temporary file in the same
    directory, created with C{mode}, synced, then renamed over C{path}.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _save_json(path: str, data: dict) -> None:
    """Write a credentials file (mode 0600), replacing any older one."""
    try:
        write_private_file(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    except OSError as e:
        raise CredentialsError(f"cannot write the credentials file {path}: {e.strerror or e}") from None


def _load_fields(path: str, id_field: str, names: tuple[str, ...]) -> list[str]:
    """The non-empty text fields C{names} of a private credentials file, C{id_field} (the first) a valid id."""
    data = _read_private_json(path)
    for name in names:
        if not isinstance(data.get(name), str) or not data[name]:
            raise CredentialsError(f"the credentials file {path} has no {name!r}")
    if not valid_id(data[id_field]):
        raise CredentialsError(f"the credentials file {path}: {id_field} must be {ID_RULE}")
    return [data[name] for name in names]


def save_credentials(path: str, credentials: Credentials) -> None:
    """Write the credentials file (mode 0600), replacing any older one."""
    _save_json(path, {"cp_id": credentials.cp_id, "secret": credentials.secret, "registry": credentials.registry})


def load_credentials(path: str) -> Credentials:
    """Read a credentials file; refuse one readable by group or others."""
    return Credentials(*_load_fields(path, "cp_id", ("cp_id", "secret", "registry")))


@dataclass(frozen=True)
class DriverCredentials:
    """A driver's credentials file: JSON ``{"driver_id", "secret"}``, mode 0600 (evctl drivers add writes it)."""

    driver_id: str
    secret: str

    def __repr__(self) -> str:  # never the secret in a log or a traceback
        return f"DriverCredentials(driver_id={self.driver_id!r}, secret=...)"


def save_driver_credentials(path: str, credentials: DriverCredentials) -> None:
    _save_json(path, {"driver_id": credentials.driver_id, "secret": credentials.secret})


def load_driver_credentials(path: str) -> DriverCredentials:
    return DriverCredentials(*_load_fields(path, "driver_id", ("driver_id", "secret")))


def _read_private_json(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise CredentialsError(
                    f"the credentials file {path} may be read by others (mode {stat.S_IMODE(mode):04o}): "
                    f"chmod 600 {path}"
                )
            raw = f.read()
    except OSError as e:
        raise CredentialsError(f"cannot read the credentials file {path}: {e.strerror or e}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CredentialsError(f"the credentials file {path} is not JSON") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"the credentials file {path} must hold a JSON object")
    return data
