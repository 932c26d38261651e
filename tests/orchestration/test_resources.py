"""Dagster's dbt resource: the version it tells dagster-dbt is the version of the dbt it runs."""

from __future__ import annotations

import re
import subprocess

from orchestration.resources import resources


def test_the_dbt_resource_reports_the_version_of_the_dbt_it_invokes():
    dbt = resources()["dbt"]
    printed = subprocess.run([dbt.dbt_executable, "--version"], capture_output=True, text=True, check=True).stdout
    assert str(dbt._cli_version) == re.search(r"(\d+\.\d+\.\d+)", printed).group(1)
