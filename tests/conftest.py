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
