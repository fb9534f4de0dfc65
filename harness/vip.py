"""The VIP sampler: which node namespaces hold the floating address, sampled by the harness."""

from __future__ import annotations

from collections.abc import Iterable

from bot.lab.netns import VIP, AddressReader, Topology, netns_unavailable, parse_addr_dump
from harness.recorders import PollingSampler

__all__ = ["VIP", "Topology", "VipSampler", "netns_unavailable", "parse_addr_dump"]


class VipSampler(PollingSampler):
    """Every ``period`` (10 ms), which node namespaces hold the floating address.

    Sampled by the harness, never reported by a bot. Intervals run from the first
    sample that saw the address to the first that did not.
    """

    def __init__(self, topology: Topology, period: float = 0.01, vip: str | None = None):
        self.topology = topology
        self.vip = vip or topology.vip
        self._readers = {n: AddressReader(topology.ns(n)) for n in topology.nodes}
        super().__init__(self._probe, period, name="vip-sampler")

    @property
    def fast(self) -> bool:
        return all(r._sock is not None for r in self._readers.values())

    def _probe(self) -> Iterable[str]:
        return {n for n, r in self._readers.items() if self.vip in r.addresses()}

    def stop(self) -> None:
        super().stop()
        for reader in self._readers.values():
            reader.close()
