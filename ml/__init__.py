"""Detection logic: pure functions over polars frames (no database, no clock).

* ``schema``: the session frame every function reads (``SESSION_SCHEMA``, ``conform``);
* ``features``: per-session measures derived from it (cost and latency per LLM call...);
* ``baseline``: an agent's first stable window and its summary;
* ``regression``: sessions that differ from their agent's baseline, field by field;
* ``anomaly``: the seed's rules and the seven failure modes, against each agent's history;
* ``forest``: a versioned IsolationForest per agent;
* ``evaluation``: precision and recall against the simulator's ground truth.
"""
