"""The floating IP address: add, remove, check, and announce with gratuitous ARP.

Announcements run in the background (their owner is this object) so that a
takeover does not wait for the ARP burst; ``aclose()`` ends them. Every command
runs inside ``vip.netns`` when it is set (labs and tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable

from bot.actions.errors import ActionError, CommandNotFound, VipError
from bot.actions.runner import Runner, run_command
from bot.config import VipConfig

log = logging.getLogger(__name__)

IP_TIMEOUT = 5.0
# arping waits a second after its last packet for replies that never come with -U.
ARPING_WAIT = 3.0


def default_label(interface: str) -> str:
    # Linux labels must start with the interface name and fit IFNAMSIZ (15).
    return f"{interface}:fo"[:15]


def addresses_in(output: str) -> set[str]:
    """Addresses (without prefix) in ``ip -o addr show`` output."""
    found = set()
    for line in output.splitlines():
        tokens = line.split()
        for i, token in enumerate(tokens[:-1]):
            if token in ("inet", "inet6"):
                found.add(tokens[i + 1].split("/")[0])
    return found


class Vip:
    def __init__(
        self, cfg: VipConfig, *, runner: Runner = run_command, limit: float = IP_TIMEOUT
    ) -> None:
        self.cfg = cfg
        self.run = runner
        self.timeout = limit
        self.interface_address = ipaddress.ip_interface(cfg.address)
        self.address = str(self.interface_address.ip)
        self.label = cfg.label or default_label(cfg.interface)
        self._announcements: set[asyncio.Task[None]] = set()
        # Set by ``down``, cleared by ``up``: after a removal the refresh announces nothing
        # until the address is put up again (never the old MAC after a fence). Clear at
        # start: a bot that adopts its lease re-announces the address it finds.
        self._taken_down = False

    def _argv(self, *argv: str) -> list[str]:
        prefix = ["ip", "netns", "exec", self.cfg.netns] if self.cfg.netns else []
        return [*prefix, *argv]

    async def _ip(self, *argv: str, limit: float | None) -> tuple[int, str]:
        try:
            result = await self.run(
                self._argv("ip", *argv), timeout=limit or self.timeout, check=False
            )
        except CommandNotFound as exc:
            raise VipError(str(exc)) from None
        return result.returncode, result.stderr.strip() or result.stdout.strip()

    async def present(self, *, limit: float | None = None) -> bool:
        family = "-6" if self.interface_address.version == 6 else "-4"
        argv = self._argv("ip", "-o", family, "addr", "show", "dev", self.cfg.interface)
        result = await self.run(argv, timeout=limit or self.timeout, check=False)
        if result.returncode != 0:
            raise VipError(f"cannot list addresses: {result.summary()}")
        return self.address in addresses_in(result.stdout)

    async def up(self, *, limit: float | None = None) -> bool:
        """Add the address (and announce it); False when it was already there."""
        code, text = await self._ip(
            "addr",
            "add",
            self.cfg.address,
            "dev",
            self.cfg.interface,
            "label",
            self.label,
            limit=limit,
        )
        if code != 0:
            if "File exists" in text or "already assigned" in text:
                # Still announced: a router may hold the old primary's MAC for it.
                self._taken_down = False
                self.announce()
                return False
            raise VipError(f"ip addr add {self.cfg.address} dev {self.cfg.interface}: {text}")
        self._taken_down = False
        self.announce()
        return True

    async def down(self, *, limit: float | None = None) -> bool:
        """Remove the address; False when it was not there. Every announcement ends first,
        the periodic one's running arping included, and none starts until ``up``."""
        self._taken_down = True
        self._cancel_announcements()
        code, text = await self._ip(
            "addr", "del", self.cfg.address, "dev", self.cfg.interface, limit=limit
        )
        if code != 0:
            if "Cannot assign requested address" in text or "Address not found" in text:
                return False
            raise VipError(f"ip addr del {self.cfg.address} dev {self.cfg.interface}: {text}")
        return True

    def arping_argv(self, count: int, interval: int | None = None) -> list[str]:
        every = ["-i", str(interval)] if interval else []
        return self._argv(
            "arping", "-q", "-U", "-c", str(count), *every, "-I", self.cfg.interface, self.address
        )  # fmt: skip

    async def announce_now(self) -> None:
        """One burst of gratuitous ARP, awaited."""
        if self.interface_address.version == 6:
            return  # check-config refuses IPv6 floating addresses
        count, interval = self.cfg.arp_count, self.cfg.arp_interval
        if interval >= 1 and interval == int(interval):
            argv = self.arping_argv(count, int(interval))
            results = [await self._arping(argv, count * interval + ARPING_WAIT)]
        else:
            # iputils arping takes whole seconds only: space single packets ourselves.
            tasks: list[asyncio.Task[Exception | None]] = []
            try:
                for i in range(count):
                    if i:
                        await asyncio.sleep(interval)
                    tasks.append(
                        asyncio.create_task(self._arping(self.arping_argv(1), ARPING_WAIT))
                    )
                results = list(await asyncio.gather(*tasks))
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if r is not None]
        if errors:
            raise VipError(f"gratuitous ARP failed: {errors[0]}")

    async def _arping(self, argv: list[str], limit: float) -> Exception | None:
        try:
            await self.run(argv, timeout=limit)
        except ActionError as exc:
            return exc
        return None

    def announce(self) -> asyncio.Task[None]:
        """Start a burst in the background; failures are logged."""
        task = asyncio.create_task(self._announce_logged(), name="vip-announce")
        self._announcements.add(task)
        task.add_done_callback(self._announcements.discard)
        return task

    async def _announce_logged(self) -> None:
        try:
            await self.announce_now()
        except VipError as exc:
            log.warning("%s", exc)

    async def run_refresh(self, active: Callable[[], bool]) -> None:
        """Re-announce every ``refresh_interval`` while ``active()`` and present; runs until
        cancelled."""
        while True:
            await asyncio.sleep(self.cfg.refresh_interval)
            if self._taken_down or not active():
                continue
            try:
                present = await self.present()
            except VipError as exc:
                log.warning("floating IP re-announcement: %s", exc)
                continue
            if present and not self._taken_down:
                # A tracked burst: ``down`` cancels it (and kills its arping) at once.
                await asyncio.wait([self.announce()])

    def _cancel_announcements(self) -> None:
        for task in list(self._announcements):
            task.cancel()

    async def aclose(self) -> None:
        tasks = list(self._announcements)
        self._cancel_announcements()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_announced(self) -> None:
        """Wait for background announcements to end (tests, shutdown)."""
        tasks = list(self._announcements)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def check(self) -> list[str]:
        """Problems for check-config/readiness: the tools and the interface."""
        problems: list[str] = []
        try:
            await self.present()
        except VipError as exc:
            problems.append(str(exc))
        if self.interface_address.version == 6:
            problems.append("IPv6 floating addresses are not supported")
        return problems
