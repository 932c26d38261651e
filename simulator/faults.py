"""The failure modes the simulator can inject, and the ground truth it records.

An injection is written ``TYPE@START[..END][/AGENT]``: START and END are ISO
8601 times or percentages of the simulated range (``cost_spike@60%..65%``);
AGENT defaults to the agent the failure mode is most typical for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

# Injection type -> the agent it targets by default. Names match the detectors' anomaly types.
FAULT_TYPES = {
    "cost_creep": "customer-support-agent",
    "cost_spike": "customer-support-agent",
    "latency_spike": "customer-support-agent",
    "sequential_tax": "research-agent",
    "tool_usage_change": "customer-support-agent",
    "model_change": "customer-support-agent",
    "confident_hallucination": "customer-support-agent",
    "context_rot": "research-agent",
    "skill_bloat": "customer-support-agent",
    "cascade_failure": "pipeline-orchestrator",
}
# Spikes are short by nature: without an END they last this share of the range.
DEFAULT_SPIKE_SHARE = 0.05
SPIKES = {"cost_spike", "latency_spike"}


@dataclass(frozen=True)
class Injection:
    fault: str
    agent: str
    start_ms: float
    end_ms: float

    def active(self, agent: str, at_ms: float) -> bool:
        return agent == self.agent and self.start_ms <= at_ms < self.end_ms

    def days_active(self, at_ms: float) -> float:
        return max(0.0, (at_ms - self.start_ms) / 86_400_000)


def _parse_time(text: str, range_start: float, range_end: float) -> float:
    text = text.strip()
    if text.endswith("%"):
        share = float(text[:-1]) / 100
        if not 0 <= share <= 1:
            raise ValueError(f"percentage out of 0-100%: {text}")
        return range_start + share * (range_end - range_start)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp() * 1000


def parse_injection(spec: str, range_start: float, range_end: float) -> Injection:
    """``cost_spike@60%..65%/customer-support-agent`` -> Injection."""
    fault, sep, rest = spec.partition("@")
    fault = fault.strip()
    if fault not in FAULT_TYPES:
        raise ValueError(f"unknown fault {fault!r}; one of: {', '.join(FAULT_TYPES)}")
    if not sep:
        raise ValueError(f"missing @START in {spec!r} (e.g. {fault}@50%)")
    when, _, agent = rest.partition("/")
    start_text, _, end_text = when.partition("..")
    start = _parse_time(start_text, range_start, range_end)
    if end_text:
        end = _parse_time(end_text, range_start, range_end)
    elif fault in SPIKES:
        end = start + DEFAULT_SPIKE_SHARE * (range_end - range_start)
    else:
        end = float("inf")
    if end <= start:
        raise ValueError(f"end before start in {spec!r}")
    return Injection(fault, agent.strip() or FAULT_TYPES[fault], start, end)


class GroundTruth:
    """JSON lines, one per faulty session: sessionId, agentName, faultType, startTime, injectedAt."""

    def __init__(self, path: Path | None) -> None:
        self._file: IO[str] | None = path.open("w") if path else None
        self.counts: dict[str, int] = {}

    def record(self, session: dict, fault: Injection) -> None:
        self.counts[fault.fault] = self.counts.get(fault.fault, 0) + 1
        if self._file is not None:
            self._file.write(json.dumps({
                "sessionId": session["sessionId"],
                "agentName": session["agentName"],
                "faultType": fault.fault,
                "startTime": session["startTime"],
                "injectedAt": fault.start_ms,
            }) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def read_ground_truth(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
