"""Real processes for end-to-end tests: see evnet.launcher (shared with ``evnet demo``)."""

from evnet.launcher import BIN, Proc, ProcGroup, free_port, wait_for_port  # noqa: F401
