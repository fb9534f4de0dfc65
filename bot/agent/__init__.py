"""The running agent as a few parts that each own their state and talk one way.

``loop`` wires them and owns every task; ``lease`` keeps the lease and the
peer's promise; ``fencer`` is the one way to fence; ``executor`` carries out the
HA step's actions; ``observer`` makes one ``Observation`` per cycle; ``reporter``
says what happened (record, events, metrics, status).
"""

from bot.agent.loop import Agent, run_agent

__all__ = ["Agent", "run_agent"]
