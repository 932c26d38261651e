"""Dagster resources: the database and dbt, configured from the environment at run time."""

from __future__ import annotations

import sys
from functools import cached_property
from importlib.metadata import version
from pathlib import Path

import psycopg
from dagster import ConfigurableResource, EnvVar
from dagster_dbt import DbtCliResource
from packaging.version import Version

from orchestration.dbt import PROJECT, dbt_env


class BagulaDatabase(ConfigurableResource):
    """The platform's PostgreSQL (raw tables, marts, verdicts)."""

    database_url: str

    def connect(self) -> psycopg.Connection:
        # Autocommit: each store call that writes opens its own transaction.
        return psycopg.connect(self.database_url, autocommit=True)

    def dbt_env(self) -> dict[str, str]:
        return dbt_env(self.database_url)


def dbt_executable() -> str:
    # The dbt installed beside this Python: the daemon's PATH need not include the venv.
    candidate = Path(sys.executable).parent / "dbt"
    return str(candidate) if candidate.exists() else "dbt"


class BagulaDbt(DbtCliResource):
    """dbt as Dagster invokes it, without a `dbt --version` process before every invocation
    (3 s of CPU each): the executable is this environment's, so its version is dbt-core's."""

    @cached_property
    def _cli_version(self) -> Version:
        return Version(version("dbt-core"))


def resources() -> dict[str, object]:
    return {
        "database": BagulaDatabase(database_url=EnvVar("BAGULA_DATABASE_URL")),
        "dbt": BagulaDbt(project_dir=PROJECT, dbt_executable=dbt_executable()),
    }
