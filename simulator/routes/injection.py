"""The simulator's state as handlers receive it (`sim: Sim`), injected by name."""

from __future__ import annotations

from litestar.di import NamedDependency

from simulator.state import SimulatorState

Sim = NamedDependency[SimulatorState]
