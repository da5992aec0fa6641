"""
``twistd -n evregistry`` as a real process, driven by ``evctl registry``
over HTTPS: the certificate made at first start, an enrollment, a
registration into a 0600 credentials file, refusals, a restart.
"""

import os
import re
import sqlite3
import stat

import pytest
from cryptography import x509

from evnet.protocols import security
from evnet.registry.credentials import load_credentials
from evnet.registry.tls import fingerprint
from tests.procs import free_port, wait_for_port

pytestmark = pytest.mark.slow


class Registry:
    def __init__(self, procs, tmp_path):
        self.procs = procs
        self.tmp = tmp_path
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.db = tmp_path / "evcentral.db"
        self.admin = tmp_path / "admin.token"
        self.admin.write_text("the-admin-token\n")
        self.admin.chmod(0o600)
        self.runs = 0

    def start(self, *extra, port=None, state="state"):
        self.runs += 1
        return self.procs.twistd(
            f"registry-{self.runs}", "evregistry", "--listen", f"tcp:{port or self.port}:interface=127.0.0.1",
            "--db", f"sqlite:{self.db}", "--state-dir", str(self.tmp / state),
            "--admin-token-file", str(self.admin), *extra,
        )

    def evctl(self, *args, code=0, ca=True):
        argv = ["registry", *args, "--registry", self.url]
        if ca:
            argv += ["--ca-file", str(self.tmp / "state" / "registry-cert.pem")]
        proc = self.procs.command("evctl", "evctl", *argv)
        proc.wait(30)
        assert proc.stop() == code, proc.output()  # stop(): the process ended; all its output is read
        return proc.output()

    def rows(self, sql):
        with sqlite3.connect(self.db) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(sql)]


def test_evregistry_over_https_with_evctl(procs, tmp_path):
    reg = Registry(procs, tmp_path)
    server = reg.start()
    ready = server.wait_for(r"SHA-256 fingerprint (\S+); clients pass --ca-file (\S+)", timeout=30)
    server.wait_for("EV_Registry ready", timeout=30)
    wait_for_port(reg.port)
    assert "created a self-signed certificate" in server.output()
    cert_path = tmp_path / "state" / "registry-cert.pem"
    assert ready.group(2) == str(cert_path)
    assert ready.group(1) == fingerprint(x509.load_pem_x509_certificate(cert_path.read_bytes()))
    assert stat.S_IMODE(os.stat(tmp_path / "state" / "registry-key.pem").st_mode) == 0o600

    token_file = tmp_path / "cp01.token"
    out = reg.evctl("enroll", "CP01", "--ttl", "600", "--token-file", str(reg.admin), "--token-output",
                    str(token_file))
    assert "written to" in out and stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    creds_file = tmp_path / "cp01.json"
    out = reg.evctl("add", "CP01", "--location", "Calle Mayor 1", "--price", "0.35",
                    "--enrollment-token-file", str(token_file), "--credentials-file", str(creds_file))
    assert "CP01 registered (alta)" in out and "(mode 0600)" in out
    assert stat.S_IMODE(os.stat(creds_file).st_mode) == 0o600
    creds = load_credentials(str(creds_file))
    assert creds.cp_id == "CP01" and creds.registry == reg.url and creds.secret not in out
    [row] = reg.rows("SELECT * FROM registrations")
    verifier = security.Verifier.from_text(row["verifier"])
    assert security.make_verifier(creds.secret, salt=verifier.salt) == verifier

    # A wrong token: 401, and a row saying why and from where.
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token\n")
    out = reg.evctl("add", "CP02", "--location", "Plaza 2", "--price", "0.3", "--enrollment-token-file",
                    str(wrong), code=1)
    assert "refused (401)" in out
    [refusal] = reg.rows("SELECT * FROM events WHERE kind = 'registry-refused'")
    assert refusal["subject"] == "CP02" and "unknown enrollment token" in refusal["detail"]
    assert re.search(r"from 127\.0\.0\.1:\d+", refusal["detail"])
    assert "not-the-token" not in server.output() + repr(reg.rows("SELECT * FROM events"))

    # A client that does not trust the Registry's certificate.
    out = reg.evctl("list", "--token-file", str(reg.admin), code=2, ca=False)
    assert "certificate" in out and "--ca-file" in out and "Traceback" not in out
    assert "CP01" in reg.evctl("list")

    # The port is taken: one line, exit status 1.
    second = reg.start(state="state2")
    second.wait(30)
    assert second.stop() == 1, second.output()
    assert "cannot listen on --listen" in second.output() and "Traceback" not in second.output()

    # A restart reuses the certificate.
    server.stop()
    again = reg.start()
    again.wait_for("EV_Registry ready", timeout=30)
    assert f"fingerprint {ready.group(1)};" in again.output()
    assert "created a self-signed certificate" not in again.output()
    assert "Traceback" not in server.output() + again.output()
