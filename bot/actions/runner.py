"""Run external commands: argv lists only, a timeout, and no child left behind.

Every child runs in its own session so that a timeout or a cancellation kills
the whole process group (``ip netns exec`` or a service wrapper may fork), and
the child is reaped before the call returns or re-raises. Output is captured,
capped and redacted so that it can go to the event log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Protocol

from bot.actions.errors import CommandFailed, CommandNotFound, CommandTimeout

log = logging.getLogger(__name__)

OUTPUT_LIMIT = 64 * 1024
REAP_TIMEOUT = 2.0
REDACTED = "***"


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]  # redacted
    returncode: int
    stdout: str  # redacted, capped
    stderr: str  # redacted, capped
    duration: float
    ok: bool = field(default=False, compare=False)

    def summary(self) -> str:
        """One line for the event log."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        tail = f": {text[-1][:200]}" if text else ""
        return f"{' '.join(self.argv)} exited {self.returncode} in {self.duration:.3f}s{tail}"


class Runner(Protocol):
    async def __call__(
        self,
        argv: list[str],
        *,
        timeout: float,  # noqa: ASYNC109 - the runner's contract: one limit per command
        redact: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> CommandResult: ...


def redact_text(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


async def run_command(
    argv: list[str],
    *,
    timeout: float,  # noqa: ASYNC109 - the child is killed at the limit, not just abandoned
    redact: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> CommandResult:
    """Run ``argv`` (never a shell line) and return its redacted result.

    ``env`` adds to (and overrides) the inherited environment. With ``check``,
    a non-zero exit raises ``CommandFailed``; a timeout always raises
    ``CommandTimeout``; a missing executable raises ``CommandNotFound``.
    """
    if not argv or not all(isinstance(a, str) for a in argv):
        raise CommandFailed(f"invalid argument list {argv!r}")
    shown = [redact_text(a, redact) for a in argv]
    child_env = None if env is None else {**os.environ, **env}
    started = time.monotonic()
    # Output goes to unlinked temporary files, not pipes: on Python 3.11, Process.wait()
    # also waits for the pipes to close, which a daemonising grandchild never does.
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_file,
                stderr=err_file,
                env=child_env,
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise CommandNotFound(f"{shown[0]}: cannot run ({exc.strerror or exc})") from None
        except OSError as exc:
            raise CommandFailed(f"{shown[0]}: cannot start ({exc.strerror or exc})") from None
        try:
            async with asyncio.timeout(timeout):
                returncode = await proc.wait()
        except TimeoutError:
            await _kill_and_reap(proc)
            raise CommandTimeout(
                f"{' '.join(shown)}: no result within {timeout:g}s (killed)"
            ) from None
        except BaseException:
            # Cancelled: the child and its group must not outlive us.
            await _kill_and_reap(proc)
            raise
        out, err = await asyncio.to_thread(_read_heads, out_file, err_file)

    result = CommandResult(
        argv=shown,
        returncode=returncode,
        stdout=redact_text(out, redact),
        stderr=redact_text(err, redact),
        duration=time.monotonic() - started,
        ok=returncode == 0,
    )
    log.debug("%s", result.summary())
    if check and returncode != 0:
        raise CommandFailed(
            result.summary(), returncode=returncode, output=(result.stderr or result.stdout)
        )
    return result


def _read_heads(*files: IO[bytes]) -> tuple[str, str]:
    texts = []
    for fh in files:
        fh.seek(0)
        texts.append(fh.read(OUTPUT_LIMIT).decode("utf-8", errors="replace"))
    return texts[0], texts[1]


async def _kill_and_reap(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    # Reaping must finish even when we are being cancelled again.
    waiter = asyncio.ensure_future(proc.wait())
    try:
        await asyncio.wait_for(asyncio.shield(waiter), REAP_TIMEOUT)
    except TimeoutError:
        log.warning("child %d not reaped within %gs", proc.pid, REAP_TIMEOUT)
