"""The command runner: argv only, timeouts, no child left behind, redaction."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from bot.actions.errors import CommandFailed, CommandNotFound, CommandTimeout
from bot.actions.runner import run_command
from tests.helpers import wait_for

PY = sys.executable


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def test_runs_argv_and_captures_output() -> None:
    result = await run_command(
        [PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)"], timeout=10
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "out\n", "err\n")
    assert result.duration > 0


async def test_arguments_are_never_shell_parsed() -> None:
    result = await run_command(["echo", "$HOME; rm -rf /"], timeout=5)
    assert result.stdout == "$HOME; rm -rf /\n"


async def test_nonzero_exit_raises_or_returns() -> None:
    with pytest.raises(CommandFailed) as info:
        await run_command([PY, "-c", "import sys; sys.exit('broken')"], timeout=10)
    assert info.value.returncode == 1 and "broken" in str(info.value)
    result = await run_command([PY, "-c", "raise SystemExit(3)"], timeout=10, check=False)
    assert result.returncode == 3


async def test_missing_command_is_a_clear_error() -> None:
    with pytest.raises(CommandNotFound, match="no-such-command-xyz"):
        await run_command(["no-such-command-xyz"], timeout=5)


async def test_secrets_are_redacted_everywhere() -> None:
    secret = "hunter2-secret"
    with pytest.raises(CommandFailed) as info:
        await run_command(
            [PY, "-c", "import sys; print(sys.argv[1]); sys.exit('bad ' + sys.argv[1])", secret],
            timeout=10,
            redact=[secret],
        )
    assert secret not in str(info.value) and secret not in info.value.output
    result = await run_command(
        [PY, "-c", "import sys; print(sys.argv[1])", secret], timeout=10, redact=[secret]
    )
    assert secret not in result.stdout + " ".join(result.argv) + result.summary()
    assert "***" in result.stdout


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(300)\n"
    )
    with pytest.raises(CommandTimeout, match="killed"):
        await run_command([PY, "-c", script], timeout=1.0)
    grandchild = int(pidfile.read_text())
    await wait_for(lambda: not alive(grandchild), within=5, what="grandchild killed")


async def test_cancellation_kills_and_reaps_the_child(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = (
        f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    )
    task = asyncio.create_task(run_command([PY, "-c", script], timeout=60))
    await wait_for(
        lambda: pidfile.exists() and pidfile.read_text() != "", within=10, what="child up"
    )
    pid = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not exists(pid)  # killed and reaped: not even a zombie


async def test_a_daemonising_child_does_not_hold_the_caller(tmp_path: Path) -> None:
    # The grandchild keeps stdout open; the caller must return when the child exits.
    script = "import subprocess; subprocess.Popen(['sleep', '5']); print('started')"
    started = asyncio.get_running_loop().time()
    result = await run_command([PY, "-c", script], timeout=10)
    assert result.returncode == 0 and "started" in result.stdout
    assert asyncio.get_running_loop().time() - started < 3
