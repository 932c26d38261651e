"""`bagula prices ...`: negotiated LLM rates per project, and what the price table says.

A call sent without a cost is priced by the project's rate for its provider and model when one
is set (in force when the call started), else by genai-prices' table (docs/otlp.md, "Cost").
Rates are USD per million tokens."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

import click
import psycopg

from bagula.cli.common import aware, database_url
from ingest_api import pricing
from ingest_api.store import keys
from ingest_api.store import prices as price_store

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _rate(text: str | None, name: str) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise click.BadParameter(f"not a number: {text!r}", param_hint=name) from None
    if not value.is_finite() or value < 0:
        raise click.BadParameter("must be a finite number >= 0 (USD per million tokens)", param_hint=name)
    return value


def _project(conn: psycopg.Connection, name: str):
    project_id = keys.project_id(conn, name)
    if project_id is None:
        raise click.ClickException(f"no project named {name!r}")
    return project_id


def _fmt(value: Decimal | None) -> str:
    return "-" if value is None else f"{value.normalize():f}"


@click.group(
    name="prices",
    help="""Negotiated LLM rates per project (USD per million tokens), which the marts
prefer to the genai-prices table for calls sent without a cost.""",
)
def prices_group() -> None:
    pass


@prices_group.command(
    "set",
    help="""Set a rate for a provider ('*': any) and a model (or a prefix ending in
'*': gpt-4o* covers gpt-4o-2024-08-06). It applies to calls that started at or after --from (default:
always). Cache rates default to the input rate.""",
)
@click.option("--project", required=True)
@click.option("--provider", required=True, help="e.g. openai, anthropic; '*' for any")
@click.option("--model", required=True, help="a model name, or a prefix ending in '*'")
@click.option("--input", "input_rate", required=True, help="USD per million prompt tokens")
@click.option("--output", "output_rate", required=True, help="USD per million completion tokens")
@click.option("--cache-read", default=None, help="USD per million prompt tokens read from the cache")
@click.option("--cache-write", default=None, help="USD per million prompt tokens written to the cache")
@click.option("--from", "effective_from", default=None, help="ISO 8601 time with a zone (default: always)")
@click.option("--note", default=None)
def prices_set(
    project: str,
    provider: str,
    model: str,
    input_rate: str,
    output_rate: str,
    cache_read: str | None,
    cache_write: str | None,
    effective_from: str | None,
    note: str | None,
) -> None:
    if len(provider) > 50 or len(model) > 100 or not provider or not model:
        raise click.BadParameter("provider: 1-50 characters, model: 1-100")
    if "*" in model[:-1] or "*" in provider and provider != "*":
        raise click.BadParameter("'*' may only end a model prefix, or be the whole provider")
    price = price_store.ProjectPrice(
        provider,
        model,
        aware(effective_from, "--from") if effective_from else EPOCH,
        _rate(input_rate, "--input"),
        _rate(output_rate, "--output"),
        _rate(cache_read, "--cache-read"),
        _rate(cache_write, "--cache-write"),
        note,
    )
    with psycopg.connect(database_url()) as conn:
        new = price_store.set_price(conn, _project(conn, project), price)
    click.echo(
        f"{'set' if new else 'replaced'} {provider}/{model} for project {project!r}: input {_fmt(price.input_per_mtok)}"
        f", output {_fmt(price.output_per_mtok)} USD per million tokens"
    )
    click.echo(
        "calls built into the marts before now keep their cost: `bagula transform --full-refresh` prices them again",
        err=True,
    )


@prices_group.command("show", help="The project's rates.")
@click.option("--project", required=True)
def prices_show(project: str) -> None:
    with psycopg.connect(database_url()) as conn:
        found = price_store.list_prices(conn, _project(conn, project))
    if not found:
        click.echo(f"no rates set for project {project!r}: the genai-prices table applies ({pricing.VERSION})")
        return
    click.echo("provider\tmodel\tfrom\tinput\toutput\tcache_read\tcache_write\tnote")
    for p in found:
        since = "always" if p.effective_from == EPOCH else p.effective_from.isoformat()
        click.echo(
            f"{p.provider}\t{p.model}\t{since}\t{_fmt(p.input_per_mtok)}\t{_fmt(p.output_per_mtok)}\t"
            f"{_fmt(p.cache_read_per_mtok)}\t{_fmt(p.cache_write_per_mtok)}\t{p.note or ''}"
        )


@prices_group.command("unset", help="Remove a rate (every one of the provider and model, without --from).")
@click.option("--project", required=True)
@click.option("--provider", required=True)
@click.option("--model", required=True)
@click.option("--from", "effective_from", default=None, help="only the rate in force from this time")
def prices_unset(project: str, provider: str, model: str, effective_from: str | None) -> None:
    with psycopg.connect(database_url()) as conn:
        count = price_store.unset_price(
            conn, _project(conn, project), provider, model, aware(effective_from, "--from") if effective_from else None
        )
    if not count:
        raise click.ClickException(f"no rate set for {provider}/{model} in project {project!r}")
    click.echo(f"removed {count} rate(s) for {provider}/{model}")


@prices_group.command("lookup", help="What the genai-prices table says a call costs (no database needed).")
@click.option("--provider", required=True)
@click.option("--model", required=True)
@click.option("--input-tokens", type=click.IntRange(0), default=1_000_000, show_default=True)
@click.option("--output-tokens", type=click.IntRange(0), default=1_000_000, show_default=True)
@click.option("--cache-read-tokens", type=click.IntRange(0), default=0)
def prices_lookup(provider: str, model: str, input_tokens: int, output_tokens: int, cache_read_tokens: int) -> None:
    matched = pricing.describe(provider, model)
    if matched is None:
        raise click.ClickException(
            f"{provider}/{model} is not in {pricing.VERSION}: its calls' cost is 'unknown' "
            "unless a project rate covers it (bagula prices set)"
        )
    found = pricing.estimate(provider, model, input_tokens, output_tokens, cache_read_tokens)
    cost = "-" if found is None else f"{found.cost_usd.normalize():f}"
    click.echo(
        f"{matched}\t{cost} USD for {input_tokens} input ({cache_read_tokens} cached), {output_tokens} output "
        f"tokens ({pricing.VERSION})"
    )
