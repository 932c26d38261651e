"""Trained detectors (the forests), stored once per agent, kind and day so that every
verdict can be traced to, and reproduced with, the model that gave it."""

from __future__ import annotations

import pickle
import zlib
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


def load(conn: psycopg.Connection, project_id: str, agent_name: str, kind: str, day: Any) -> Any | None:
    row = conn.execute(
        "select model from detection_models where project_id = %s and agent_name = %s and kind = %s"
        " and trained_for_day = %s",
        (project_id, agent_name, kind, day),
    ).fetchone()
    # Only our own pickles, written below by this same code, are ever loaded.
    return pickle.loads(zlib.decompress(row[0])) if row else None


def save(conn: psycopg.Connection, project_id: str, agent_name: str, kind: str, day: Any, model: Any) -> Any:
    """Store a trained model once per (agent, kind, day); returns the stored one (the
    first writer's, if two runs trained the same day at once)."""
    inserted = conn.execute(
        """
        insert into detection_models (model_version, project_id, agent_name, kind, trained_for_day, trained_from,
                                      trained_until, training_sessions, features, params, model)
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        on conflict do nothing
        returning model_id
        """,
        (model.version, project_id, agent_name, kind, day, model.trained_from, model.trained_until,
         model.trained_rows, list(model.features), Jsonb(model.params), zlib.compress(pickle.dumps(model), 1)),
    ).fetchone()
    return model if inserted else load(conn, project_id, agent_name, kind, day)
