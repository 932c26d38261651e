"""Detection's data path, in one place: the session frame from the marts (``frames``),
baselines and trained models (``baselines``, ``models``), ``detect`` asking ``ml`` for
verdicts, verdicts and their alert outbox rows written exactly once (``verdicts``), and
the outbox delivered to the webhook (``alerts``). No Dagster here: the assets, the CLI
and tests share it. Connections are in autocommit mode; every write that must be atomic
opens its own transaction.
"""
