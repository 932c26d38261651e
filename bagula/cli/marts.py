"""`bagula transform` and `bagula dbt ...`: the dbt marts."""

from __future__ import annotations

import time

import click

from bagula.cli.common import database_url


@click.command("transform", context_settings={"ignore_unknown_options": True},
               help="Build the marts: `dbt build` with the project's own profile, from BAGULA_DATABASE_URL. "
                    "Extra arguments go to dbt (e.g. --select fct_sessions+).")
@click.option("--full-refresh", is_flag=True, help="rebuild every incremental model from scratch")
@click.option("--every", type=float, default=None, help="keep running: build again every this many seconds")
@click.argument("dbt_args", nargs=-1, type=click.UNPROCESSED)
def transform_command(full_refresh: bool, every: float | None, dbt_args: tuple[str, ...]) -> None:
    from orchestration.dbt import transform

    url = database_url()
    while True:
        ok = transform(url, *dbt_args, full_refresh=full_refresh)
        if every is None:
            if not ok:
                raise click.ClickException("dbt build failed (see the output above)")
            return
        # Periodic mode keeps going: the next run picks up where this one stopped.
        if not ok:
            click.echo("dbt build failed; retrying at the next interval", err=True)
        full_refresh = False
        time.sleep(every)


@click.command("dbt", context_settings={"ignore_unknown_options": True},
               help="Run any dbt command against BAGULA_DATABASE_URL, e.g. `bagula dbt docs generate`.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True)
def dbt_command(args: tuple[str, ...]) -> None:
    from orchestration.dbt import run_dbt

    if not run_dbt(database_url(), *args):
        raise click.ClickException(f"dbt {' '.join(args)} failed")
