"""
schemathesis (a property-based OpenAPI tester) against a live Central:
every operation of /api/v1/openapi.json fuzzed with every check (status codes,
response schemas, SSE events, Allow headers, content types, server errors,
stateful links), with one charging point logged in so that the per-CP
routes reach real answers.  It fails on any finding; its report is printed.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.network import Network
from tests.procs import BIN

pytestmark = pytest.mark.slow


def test_the_api_does_what_its_openapi_document_says(procs):
    net = Network(procs)
    net.start_central()
    net.add_cp("CP1")
    base = f"http://127.0.0.1:{net.http_port}"
    run = subprocess.run(
        [str(BIN / "schemathesis"), "run", f"{base}/api/v1/openapi.json", "--checks", "all",
         "--max-examples", "25", "--seed", "20261202", "--request-timeout", "2", "--max-time", "90",
         "--workers", "1", "--warnings", "off", "--no-color"],
        capture_output=True, text=True, timeout=400, cwd=procs.workdir,
    )
    report = run.stdout[-6000:] + run.stderr[-2000:]
    print(run.stdout[-3000:])
    assert run.returncode == 0, report
    assert "No issues found" in run.stdout or " passed" in run.stdout, report
