"""`bagula superset ...` (placeholder; see issue 6)."""

import click


@click.group(name="superset", help="Superset dashboards over the marts.")
def superset_group() -> None:
    pass
