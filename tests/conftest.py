import os

import pytest

from tests.procs import ProcGroup


@pytest.fixture
def procs(tmp_path):
    """Real processes started in tmp_path; all stopped by PID at the end."""
    group = ProcGroup(str(tmp_path))
    try:
        yield group
    finally:
        group.stop_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """
    With EVNET_REQUIRE_SERVICES=1 (scripts/test.sh, hence CI) a skipped test
    is a failed test: tests that need MariaDB, Kafka or the browser never
    silently skip there.
    """
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("EVNET_REQUIRE_SERVICES") == "1":
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped, but EVNET_REQUIRE_SERVICES=1 forbids skips: {reason}"
