"""
The driver's request file and its progress file.

- L{parse_requests} is pure: the text of a request file to a list of
  L{Request} and a list of L{BadLine} problems; L{read_requests} reads the
  file and says plainly why it cannot.
- L{Progress} remembers how far a driver got in its file, so that a driver
  killed and started again goes on with it instead of starting it over.

``docs/driver.md`` describes the format.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from twisted.logger import Logger

from evnet.protocols.vocabulary import valid_id

@dataclass(frozen=True)
class Request:
    """One line of a request file: charge at C{cp_id}, up to C{target_kwh} (0: no target)."""

    cp_id: str
    target_kwh: float = 0.0
    line: int = 0


@dataclass(frozen=True)
class BadLine:
    """A malformed line, skipped; C{message} is what the user reads."""

    line: int
    message: str


class RequestsFileError(Exception):
    """The request file cannot be read; the text says why, for the user."""


_COMMENT = re.compile(r"(?:^|\s)#")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?\Z|\.[0-9]+\Z")


def parse_requests(text: str, name: str = "requests") -> tuple[list[Request], list[BadLine]]:
    """
    The requests in the text of a request file called C{name}: one per line,
    C{CP_ID [TARGET_KWH]}; blank lines and C{#} comments (a whole line, or
    after a space at the end of one) are ignored; a malformed line becomes
    a L{BadLine}.
    """
    requests: list[Request] = []
    problems: list[BadLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        content = _COMMENT.split(raw, 1)[0].strip()
        if not content:
            continue
        words = content.split()
        if len(words) > 2 or not valid_id(words[0]) or (
            len(words) == 2 and not _NUMBER.match(words[1])
        ):
            problems.append(
                BadLine(number, f"{name}:{number}: expected 'CP_ID [TARGET_KWH]', got {content!r}")
            )
            continue
        target = round(float(words[1]), 3) if len(words) == 2 else 0.0
        if len(words) == 2 and target <= 0:
            problems.append(
                BadLine(number, f"{name}:{number}: TARGET_KWH must be more than 0, got {words[1]!r}")
            )
            continue
        requests.append(Request(words[0], target, number))
    return requests, problems


def read_requests(path: str) -> tuple[list[Request], list[BadLine]]:
    """
    L{parse_requests} on the file at C{path}; L{RequestsFileError} with a
    plain message if it cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RequestsFileError(f"request file {path!r} does not exist") from None
    except IsADirectoryError:
        raise RequestsFileError(f"request file {path!r} is a directory") from None
    except PermissionError:
        raise RequestsFileError(f"request file {path!r} cannot be read: permission denied") from None
    except UnicodeDecodeError:
        raise RequestsFileError(f"request file {path!r} is not UTF-8 text") from None
    except OSError as e:
        raise RequestsFileError(f"request file {path!r} cannot be read: {e.strerror or e}") from None
    return parse_requests(text, path)


class Progress:
    """
    Where a driver is in its request file, kept in a small JSON file so that
    a driver killed and started again goes on with its file instead of
    starting it over: the index of the request in progress (0-based), and
    the session Central authorized for it, if any.  A file whose requests
    changed since (another path or other contents) starts from the top.
    Written atomically (temp file + rename); removed once the file is done.
    """

    log = Logger()

    def __init__(self, path: str, requests_path: str, requests_text: str) -> None:
        self.path = Path(path)
        self.requests_path = str(Path(requests_path).resolve())
        self.digest = hashlib.sha256(requests_text.encode("utf-8")).hexdigest()

    def load(self) -> tuple[int, Optional[str]]:
        """(index of the request to go on with, its session if it was authorized); (0, None) by default."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return 0, None
        except (OSError, ValueError) as e:
            self.log.warn("progress file {path} unreadable ({why}): starting from the first request", path=str(self.path), why=e)
            return 0, None
        if data.get("requests_file") != self.requests_path or data.get("sha256") != self.digest:
            return 0, None
        index = data.get("next")
        session = data.get("session")
        if not isinstance(index, int) or index < 0:
            return 0, None
        return index, session if isinstance(session, str) else None

    def save(self, index: int, session: Optional[str]) -> None:
        data = {"requests_file": self.requests_path, "sha256": self.digest, "next": index, "session": session}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as e:
            self.log.warn("cannot write the progress file {path}: {why}", path=str(self.path), why=e)

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            self.log.warn("cannot remove the progress file {path}: {why}", path=str(self.path), why=e)

