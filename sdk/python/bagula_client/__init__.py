"""Bagula's Python client: instrument an agent, and its completed sessions reach Bagula
in batches from a background thread, without slowing or breaking the agent."""

__version__ = "0.1.0"

from bagula_client._client import BagulaClient  # noqa: E402
from bagula_client._tracker import SessionScope, SessionTracker, TurnScope  # noqa: E402

__all__ = ["BagulaClient", "SessionTracker", "SessionScope", "TurnScope", "__version__"]
