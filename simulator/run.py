"""Scheduling simulated traffic over a time range and sending it through the SDK."""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bagula_client import BagulaClient
from simulator.agents import AGENTS, AgentProfile, Produced
from simulator.faults import GroundTruth, Injection

HOUR_MS = 3_600_000


def diurnal(at_ms: float) -> float:
    """Traffic through the day: quiet at night (0.3x), busiest mid-afternoon (1.7x), mean 1."""
    hour = (at_ms / HOUR_MS) % 24
    return 1.0 + 0.7 * math.sin((hour - 9) / 24 * 2 * math.pi)


def arrivals(rng: random.Random, per_hour: float, start_ms: float, end_ms: float) -> Iterator[float]:
    """Session start times: a Poisson process with the daily pattern above (by thinning)."""
    peak = per_hour * 1.7 / HOUR_MS
    if peak <= 0:
        return
    t = start_ms
    while True:
        t += rng.expovariate(peak)
        if t >= end_ms:
            return
        if rng.random() < diurnal(t) / 1.7:
            yield t


@dataclass(frozen=True)
class Arrival:
    at_ms: float
    profile: AgentProfile
    index: int


def schedule(agents: list[str], start_ms: float, end_ms: float, seed: int, scale: float) -> list[Arrival]:
    """Every agent run in the range, in time order. Each agent has its own stream, so
    adding or removing an agent leaves the others' sessions unchanged."""
    runs = []
    for key in agents:
        profile = AGENTS[key]
        rng = random.Random(f"{seed}:schedule:{key}")
        runs += [Arrival(t, profile, i) for i, t in enumerate(arrivals(rng, profile.sessions_per_hour * scale, start_ms, end_ms))]
    runs.sort(key=lambda a: (a.at_ms, a.profile.name))
    return runs


def produce(arrival: Arrival, seed: int, injections: list[Injection]) -> list[Produced]:
    rng = random.Random(f"{seed}:session:{arrival.profile.name}:{arrival.index}")
    return arrival.profile.generate(rng, arrival.at_ms, injections)


def shift_times(session: dict, delta_ms: float) -> None:
    """Move a session in time (live mode: make it end now rather than start now)."""
    for key in ("startTime", "endTime"):
        if session.get(key) is not None:
            session[key] += delta_ms
    for turn in session["turns"]:
        turn["timestamp"] += delta_ms
        calls = list(turn["llmCalls"]) + list((turn.get("agentResponse") or {}).get("toolCalls", []))
        for call in calls:
            for key in ("startTime", "endTime"):
                if call.get(key) is not None:
                    call[key] += delta_ms


@dataclass
class SimulationResult:
    sessions: Counter = field(default_factory=Counter)  # per agent
    faults: dict[str, int] = field(default_factory=dict)  # faulty sessions per fault type
    client_stats: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.sessions.values())


def simulate(
    client: BagulaClient,
    *,
    agents: list[str],
    start_ms: float,
    end_ms: float,
    seed: int,
    scale: float = 1.0,
    injections: list[Injection] = (),
    ground_truth: GroundTruth | None = None,
    live: bool = False,
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Generate the range's traffic and hand each finished session to the client.

    Backfill (``live=False``) sends as fast as the API takes it, flushing every few
    thousand sessions so memory stays flat. Live mode waits for each arrival in
    wall-clock time and shifts the session so it finishes at that moment."""
    result = SimulationResult()
    truth = ground_truth or GroundTruth(None)
    since_flush = 0
    for arrival in schedule(agents, start_ms, end_ms, seed, scale):
        if live:
            wait = arrival.at_ms / 1000 - time.time()
            if wait > 0:
                time.sleep(wait)
        produced = produce(arrival, seed, list(injections))
        if live:
            delta = arrival.at_ms - max(p.session["endTime"] for p in produced)
            for p in produced:
                shift_times(p.session, delta)
        for p in produced:
            if not client.enqueue(p.session):
                raise RuntimeError(f"the client dropped a session: {client.stats()['dropped']}")
            result.sessions[p.session["agentName"]] += 1
            for fault in p.faults:
                truth.record(p.session, fault)
        since_flush += len(produced)
        if not live and since_flush >= 2000:
            if not client.flush(timeout=600):
                raise RuntimeError("the API did not acknowledge the sessions within 10 minutes")
            since_flush = 0
        if progress is not None:
            progress(1)
    if not client.flush(timeout=600):
        raise RuntimeError("the API did not acknowledge the sessions within 10 minutes")
    result.faults = dict(truth.counts)
    result.client_stats = client.stats()
    return result


def generate(agents: list[str], start_ms: float, end_ms: float, seed: int, scale: float = 1.0,
             injections: list[Injection] = ()) -> list[Produced]:
    """All sessions of a range without sending them (for tests and analysis)."""
    return [p for a in schedule(agents, start_ms, end_ms, seed, scale) for p in produce(a, seed, list(injections))]
