"""``evnet ocpp-cp``'s own options: where the secret comes from, and a mistake is one line, exit 2."""

import json

from evnet import cli


def test_the_secret_comes_from_the_credentials_file_evctl_wrote(tmp_path):
    from evnet.ocppcp import read_secret

    path = tmp_path / "cp.json"
    path.write_text(json.dumps({"cp_id": "CP01", "secret": "s3cret-value"}))
    args = cli_args("--credentials-file", str(path))
    assert read_secret(args) == "s3cret-value"
    plain = tmp_path / "cp.password"
    plain.write_text("other-secret\n")
    assert read_secret(cli_args("--password-file", str(plain))) == "other-secret"


def cli_args(*secret):
    import argparse

    from evnet.ocppcp import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--url", "ws://127.0.0.1:1/ocpp/CP01", "--cp-id", "CP01", *secret])


def test_an_unreadable_or_wrong_secret_file_is_one_line_and_exit_2(tmp_path, capsys):
    not_json = tmp_path / "cp.json"
    not_json.write_text("secret-but-not-json")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    cases = [
        (["--credentials-file", str(not_json)], f"--credentials-file {not_json}: not a credentials file"),
        (["--password-file", str(empty)], f"{empty}: the file holds no secret"),
        (["--password-file", str(tmp_path / "missing")], "cannot read it: No such file or directory"),
    ]
    for secret, text in cases:
        code = cli.main(["ocpp-cp", "--url", "ws://127.0.0.1:1/ocpp/CP01", "--cp-id", "CP01", *secret])
        err = capsys.readouterr().err
        assert code == 2
        assert text in err and err.count("\n") == 1 and "Traceback" not in err
