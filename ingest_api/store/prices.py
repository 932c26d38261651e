"""Negotiated LLM rates per project (``project_prices``), which the marts prefer to the price
table for calls sent without a cost (dbt: int_llm_calls__priced). Written by ``bagula prices``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import psycopg


@dataclass(frozen=True)
class ProjectPrice:
    provider: str
    model: str
    effective_from: datetime
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None
    cache_write_per_mtok: Decimal | None
    note: str | None


def set_price(conn: psycopg.Connection, project_id: uuid.UUID, price: ProjectPrice) -> bool:
    """Store a rate; the same (provider, model, effective_from) again replaces it. True when new."""
    row = conn.execute(
        """
        insert into project_prices (project_id, provider, model, effective_from, input_per_mtok, output_per_mtok,
                                    cache_read_per_mtok, cache_write_per_mtok, note)
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        on conflict (project_id, provider, model, effective_from) do update set
            input_per_mtok = excluded.input_per_mtok, output_per_mtok = excluded.output_per_mtok,
            cache_read_per_mtok = excluded.cache_read_per_mtok, cache_write_per_mtok = excluded.cache_write_per_mtok,
            note = excluded.note, created_at = now()
        returning xmax = 0
        """,
        (
            project_id,
            price.provider,
            price.model,
            price.effective_from,
            price.input_per_mtok,
            price.output_per_mtok,
            price.cache_read_per_mtok,
            price.cache_write_per_mtok,
            price.note,
        ),
    ).fetchone()
    return bool(row[0])


def list_prices(conn: psycopg.Connection, project_id: uuid.UUID) -> list[ProjectPrice]:
    rows = conn.execute(
        """
        select provider, model, effective_from, input_per_mtok, output_per_mtok, cache_read_per_mtok,
               cache_write_per_mtok, note
        from project_prices where project_id = %s
        order by provider, model, effective_from
        """,
        (project_id,),
    ).fetchall()
    return [ProjectPrice(*row) for row in rows]


def unset_price(
    conn: psycopg.Connection, project_id: uuid.UUID, provider: str, model: str, effective_from: datetime | None
) -> int:
    """Remove a rate (every one of the provider and model without ``effective_from``): how many."""
    cur = conn.execute(
        "delete from project_prices where project_id = %s and provider = %s and model = %s"
        " and (%s::timestamptz is null or effective_from = %s)",
        (project_id, provider, model, effective_from, effective_from),
    )
    return cur.rowcount
