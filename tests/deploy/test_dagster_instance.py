"""Dagster's instance as `bagula dagster ...` writes it: no usage statistics unless asked for, no
newsletter prompt, storage in the platform's database (as its own role when given one), and
further settings merged from a file (the Kubernetes run launcher)."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest
import yaml
from dagster import DagsterInstance

from bagula.roles import DAGSTER
from orchestration.instance import STORAGE_URL_ENV, InstanceSettings, prepare, storage_url
from tests.deploy.conftest import ROLE_ENV, as_role, new_database
from tests.support.cli import bagula


def _written(home: Path) -> dict:
    return yaml.safe_load((home / "dagster.yaml").read_text())


def test_by_default_no_telemetry_no_newsletter_and_storage_beside_the_data(tmp_path: Path):
    env = prepare(tmp_path, "postgresql://u:p@db:5432/bagula", InstanceSettings(_env_file=None))
    config = _written(tmp_path)
    assert config["telemetry"] == {"enabled": False}
    assert config["nux"] == {"enabled": False}
    assert config["storage"] == {"postgres": {"postgres_url": {"env": STORAGE_URL_ENV}}}
    assert env[STORAGE_URL_ENV] == "postgresql+psycopg2://u:p@db:5432/bagula?options=-csearch_path%3Ddagster"
    assert config["run_coordinator"]["config"]["max_concurrent_runs"] == 1


def test_telemetry_can_be_turned_on():
    with mock.patch.dict(os.environ, {"BAGULA_DAGSTER_TELEMETRY": "true"}):
        settings = InstanceSettings()
    assert settings.telemetry is True


def test_a_storage_url_of_its_own_is_used_as_given(tmp_path: Path):
    own = "postgresql+psycopg2://bagula_dagster:pw@db:5432/bagula"
    env = prepare(tmp_path, "postgresql://bagula_transform:pw@db:5432/bagula", InstanceSettings(storage_url=own))
    assert env[STORAGE_URL_ENV] == own
    assert env["BAGULA_DATABASE_URL"] == "postgresql://bagula_transform:pw@db:5432/bagula"
    with pytest.raises(ValueError, match="psycopg2"):
        prepare(tmp_path, "postgresql://x@db/bagula", InstanceSettings(storage_url="postgresql://bagula_dagster@db/x"))


def test_further_settings_are_merged_but_never_the_storage(tmp_path: Path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("run_monitoring:\n  enabled: true\nrun_coordinator:\n  module: m\n  class: C\n")
    prepare(tmp_path / "home", "postgresql://u@db/bagula", InstanceSettings(instance_config=extra))
    config = _written(tmp_path / "home")
    assert config["run_monitoring"] == {"enabled": True}
    assert config["run_coordinator"] == {"module": "m", "class": "C"}
    assert config["nux"] == {"enabled": False}
    extra.write_text("storage:\n  sqlite: {}\n")
    with pytest.raises(ValueError, match="storage"):
        prepare(tmp_path / "home", "postgresql://u@db/bagula", InstanceSettings(instance_config=extra))


def test_dagster_runs_on_it_as_its_own_role(pg, tmp_path: Path):
    url = new_database(pg, "instance")
    assert bagula(url, "db", "roles", **ROLE_ENV).returncode == 0
    own = as_role(url, DAGSTER, scheme="postgresql+psycopg2")
    env = prepare(tmp_path, url, InstanceSettings(storage_url=own))
    with mock.patch.dict(os.environ, env):
        instance = DagsterInstance.from_config(str(tmp_path))
        try:
            assert instance.telemetry_enabled is False and instance.nux_enabled is False
            assert instance.get_runs() == []
        finally:
            instance.dispose()
    assert storage_url(url).startswith("postgresql+psycopg2://")
