"""The ``bagula`` command: one module per command group, registered here."""

from __future__ import annotations

import click

from bagula.cli.baseline import baseline_group
from bagula.cli.erasure import erase_group
from bagula.cli.keys import keys_group
from bagula.cli.marts import dbt_command, transform_command
from bagula.cli.pipeline import alerts_group, dagster_group, pipeline_group, quarantine_group
from bagula.cli.prices import prices_group
from bagula.cli.retention import redaction_group, retention_group
from bagula.cli.schema import db_group
from bagula.cli.serve import api, run
from bagula.cli.simulate import simulate_command
from bagula.cli.superset import superset_group


@click.group(help="Bagula: observability for AI agents in production.")
def main() -> None:
    pass


for command in (run, api, db_group, keys_group, transform_command, dbt_command, pipeline_group, dagster_group,
                baseline_group, alerts_group, quarantine_group, simulate_command, superset_group,
                retention_group, redaction_group, erase_group, prices_group):
    main.add_command(command)
