"""`make wheelhouse` + `make install-host`: the Debian 12 install path, into a temporary root.

Debian's own python3 (externally managed: `pip install .` is refused) builds the
virtualenv; the wheelhouse is all it installs from. The unit's ExecStart and
Documentation= point at what the install puts in place.
"""

from __future__ import annotations

import grp
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO

UNIT = REPO / "deploy" / "systemd" / "failover-bot.service"
SCRIPT = REPO / "deploy" / "install-host.sh"
DEBIAN_PYTHON = Path("/usr/bin/python3")


def _defaults() -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=\$\{\w+:-([^}]+)\}$", SCRIPT.read_text(), re.M))


def test_unit_runs_what_install_host_installs() -> None:
    defaults = _defaults()
    unit = UNIT.read_text()
    execs = re.findall(r"^Exec\w+=(\S+)", unit, re.M)
    assert execs and set(execs) == {f"{defaults['PREFIX']}/bin/failover-bot"}, execs
    makefile = (REPO / "Makefile").read_text()
    assert f"PREFIX ?= {defaults['PREFIX']}" in makefile
    docs = re.findall(r"^Documentation=file:(\S+)", unit, re.M)
    assert docs == [f"{defaults['DOCDIR']}/deploy/README.md"]
    # Ordered after the DRBD resource's boot unit.
    assert re.search(r"^Wants=.*failover-bot-drbd@pbx\.service", unit, re.M)
    assert re.search(r"^After=.*failover-bot-drbd@pbx\.service", unit, re.M)


def test_timeout_stop_covers_the_stop_hand_over() -> None:
    from bot.agent.stop import DEMOTE_MARGIN
    from bot.config import ClusterConfig

    drain = ClusterConfig.__dataclass_fields__["stop_drain_timeout"].default
    match = re.search(r"^TimeoutStopSec=(\d+)s$", UNIT.read_text(), re.M)
    assert match, "TimeoutStopSec in seconds"
    assert int(match[1]) >= drain + DEMOTE_MARGIN + 10  # + fencing and shutdown


@pytest.mark.timeout(300)
def test_install_host_into_a_temporary_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("install-host runs as root")
    if not DEBIAN_PYTHON.exists():
        pytest.skip("no /usr/bin/python3")
    wheelhouse = tmp_path / "wheelhouse"
    build = subprocess.run(
        ["make", "-C", str(REPO), "wheelhouse", f"WHEELHOUSE={wheelhouse}"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    assert any(wheelhouse.glob("failover_bot-*.whl")), list(wheelhouse.iterdir())
    root = tmp_path / "root"
    prefix = root / "opt" / "failover-bot"
    env = {
        **os.environ,
        "PREFIX": str(prefix),
        "WHEELHOUSE": str(wheelhouse),
        "BINDIR": str(root / "usr/local/bin"),
        "DOCDIR": str(root / "usr/share/doc/failover-bot"),
        "UNITDIR": str(root / "etc/systemd/system"),
        "CONFDIR": str(root / "etc/failover-bot"),
        "PYTHON": str(DEBIAN_PYTHON),
    }
    env.pop("VIRTUAL_ENV", None)
    run = subprocess.run(
        ["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # The command works from anywhere, without this checkout on the path.
    version = subprocess.run(
        [str(root / "usr/local/bin/failover-bot"), "--version"],
        cwd="/", capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert version.returncode == 0 and version.stdout.startswith("failover-bot "), version
    home = subprocess.run(
        [str(prefix / "bin/python"), "-c", "import bot; print(bot.__file__)"],
        cwd="/", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert home.stdout.startswith(str(prefix)), home
    assert (root / "usr/share/doc/failover-bot/deploy/README.md").exists()
    assert (root / "etc/systemd/system/failover-bot.service").read_text() == UNIT.read_text()
    assert (root / "etc/systemd/system/asterisk.service.d/failover-bot.conf").exists()
    grp.getgrnam("failover")  # the operators' group exists
    # A running bot (the interpreter its command's first line names) keeps the files it
    # imports from through two upgrades; the previous version is kept for a rollback.
    interpreter = (prefix / "bin/failover-bot").read_text().splitlines()[0].removeprefix("#!")
    running = subprocess.Popen(
        [interpreter, "-c", "import bot, time; print(bot.__file__, flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, cwd="/",
    )  # fmt: skip
    try:
        assert running.stdout is not None
        imported = Path(running.stdout.readline().strip())
        inode = imported.stat().st_ino
        for upgrade in (1, 2):
            again = subprocess.run(
                ["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=240,
                check=False,
            )  # fmt: skip
            assert again.returncode == 0, again.stdout + again.stderr
            assert imported.exists() and imported.stat().st_ino == inode, (
                f"upgrade {upgrade} replaced {imported} under the running bot"
            )
        previous = Path(str(prefix) + ".previous")
        assert previous.is_symlink() and (previous / "bin/failover-bot").exists()
        assert os.path.realpath(previous) != os.path.realpath(prefix)
    finally:
        running.kill()
        running.wait(10)
    conf = (root / "etc/failover-bot").stat()
    assert conf.st_mode & 0o777 == 0o750 and grp.getgrgid(conf.st_gid).gr_name == "failover"
    # A failed upgrade (nothing to install from) leaves the working version in place.
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = subprocess.run(
        ["sh", str(SCRIPT)], env={**env, "WHEELHOUSE": str(empty)},
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "unchanged" in bad.stderr, bad.stderr
    again = subprocess.run(
        [str(prefix / "bin/failover-bot"), "--version"], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    shutil.rmtree(root)
