"""Detection logic: pure functions over polars frames (no database, no clock, nothing of
Bagula's own but this package).

* ``schema``: the session frame every function reads (``SESSION_SCHEMA``, ``conform``);
  the dbt model ``marts.detection_sessions`` produces exactly these columns;
* ``verdicts``: verdict kinds, anomaly types, severities and the frames detectors return
  (the one list of anomaly types the rest of the platform reads);
* ``features``: per-session measures derived from the frame (cost and latency per LLM call...);
* ``baseline``: an agent's first stable window and its summary;
* ``regression``: sessions that differ from their agent's baseline, field by field;
* ``anomaly``: the seed's rules, the seven failure modes and the window shifts, against
  each agent's history;
* ``forest``: a versioned IsolationForest per agent;
* ``evaluation``: precision and recall against the simulator's ground truth;
* ``incidents``: verdicts that belong together grouped into incidents (opened, escalated,
  resolved), with what changed in numbers.
"""
