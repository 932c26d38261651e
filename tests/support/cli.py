"""Running the `bagula` command as users do."""

from __future__ import annotations

import os
import subprocess
import sys

COMMAND = [sys.executable, "-m", "bagula"]


def bagula(database_url: str | None, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """`bagula ARGS` with BAGULA_DATABASE_URL set to ``database_url`` (removed when None)."""
    environment = {k: v for k, v in os.environ.items() if k != "BAGULA_DATABASE_URL"}
    if database_url is not None:
        environment["BAGULA_DATABASE_URL"] = database_url
    return subprocess.run([*COMMAND, *args], env={**environment, **env}, capture_output=True, text=True,
                          timeout=timeout)
