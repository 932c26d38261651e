"""Running the platform's services as child processes until one exits or we are told to stop."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None


def supervise(services: list[Service], grace_s: float = 20.0) -> None:
    """Start every service; when one exits, or on SIGTERM / Ctrl-C, stop them all
    (SIGTERM, then SIGKILL after ``grace_s``)."""
    children = [subprocess.Popen(service.argv, env=service.env) for service in services]

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                child.kill()
