"""Packaging that really works: the wheel carries the twistd plugins."""

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("evcentral", "evmonitor", "evengine", "evregistry", "evweather")
# the statement's program names (evnet.names) -> an option of the plugin or CLI they run
PROGRAMS = {
    "EV_Central": "--liveness-timeout",
    "EV_CP_E": "--power-kw",
    "EV_CP_M": "--health-period",
    "EV_Registry": "--tls-cert",
    "EV_W": "--local-weather",
    "EV_Driver": "--requests-file",
}


def test_importing_the_plugin_module_does_not_import_the_reactor():
    code = (
        "import sys\n"
        "from twisted.plugin import getPlugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "import twisted.plugins.evnet_plugins as p\n"
        "names = {s.tapname for s in getPlugins(IServiceMaker)}\n"
        "assert 'twisted.internet.reactor' not in sys.modules, 'the plugin imported the reactor'\n"
        f"assert set({COMMANDS!r}) <= names, names\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_no_init_files_that_break_plugin_discovery():
    assert not (ROOT / "twisted" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_twistd_lists_the_commands(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
        check=True,
    )
    [wheel] = dist.glob("evnet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/evnet_plugins.py" in names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert "evnet/protocols/link.py" in names

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    # The fresh venv sees the wheel only: with the source tree on PYTHONPATH (as tests are run
    # from a worktree) pip would take its evnet.egg-info for an installed evnet and skip the
    # wheel, and twistd would find the source tree's plugin instead of the wheel's.
    alone = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pip = env_dir / "bin" / "pip"
    subprocess.run([str(pip), "install", "-q", str(wheel)], check=True, env=alone)
    out = subprocess.run(
        [str(env_dir / "bin" / "twistd"), "--help"], check=True, capture_output=True, text=True, cwd=tmp_path,
        env=alone,
    ).stdout
    for command in COMMANDS:
        assert command in out, out
    assert (env_dir / "bin" / "evdriver").exists()
    for program, option in PROGRAMS.items():
        out = subprocess.run(
            [str(env_dir / "bin" / program), "--help"], check=True, capture_output=True, text=True, cwd=tmp_path,
            env=alone,
        ).stdout
        assert out.lower().startswith(f"usage: {program.lower()} ") and option in out, out
