"""Bagula's Python client: instrument an agent, and its finished sessions reach Bagula
in batches from a background thread, without slowing or breaking the agent."""

from bagula_client import redact
from bagula_client._client import BagulaClient
from bagula_client._tracker import SessionScope, SessionTracker, TurnScope
from bagula_client._version import __version__

__all__ = ["BagulaClient", "SessionTracker", "SessionScope", "TurnScope", "redact", "__version__"]
