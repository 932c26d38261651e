"""The layout holds: import contracts (lint-imports) and lint pass, a wrong-way arrow or an
import cycle fails them, and every list of verdict types outside ml agrees with ml's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ml.verdicts import ANOMALY_TYPES, REGRESSION, SEVERITIES
from simulator.faults import FAULT_TYPES

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["bagula", "ingest_api", "orchestration", "ml", "simulator", "sdk/python/bagula_client"]
BIN = Path(sys.executable).parent


def lint_imports(cwd: Path, python_path: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(python_path)} if python_path else None
    return subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_import_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


def test_a_wrong_way_import_or_a_cycle_breaks_the_contracts(tmp_path):
    """The contracts are not vacuous: the API importing orchestration, and two modules of
    orchestration importing each other, each break one."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / Path(package).name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "ingest_api" / "wrong_way.py").write_text("import orchestration.watermark\n")
    watermark = tmp_path / "orchestration" / "watermark.py"
    watermark.write_text(watermark.read_text() + "\nfrom orchestration import dbt  # noqa: E402,F401\n")
    result = lint_imports(tmp_path, python_path=tmp_path)
    assert result.returncode != 0
    report = " ".join(result.stdout.split())
    assert "independent of each other, ml and the SDK at the bottom BROKEN" in report, result.stdout
    assert "No import cycles between modules of a package BROKEN" in report, result.stdout
    assert "ingest_api.wrong_way -> orchestration.watermark" in result.stdout
    assert "orchestration.watermark -> orchestration.dbt" in result.stdout


def test_lint_passes():
    result = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout


def _accepted_values(models_yml: Path, model: str, column: str) -> list[str]:
    [node] = [m for m in yaml.safe_load(models_yml.read_text())["models"] if m["name"] == model]
    [col] = [c for c in node["columns"] if c["name"] == column]
    [values] = [t["accepted_values"]["arguments"]["values"] for t in col["data_tests"]
                if isinstance(t, dict) and "accepted_values" in t]
    return values


def test_verdict_types_outside_ml_agree_with_ml():
    detection = ROOT / "dbt_project" / "models" / "marts" / "detection" / "_models.yml"
    assert _accepted_values(detection, "fct_anomalies", "anomaly_type") == list(ANOMALY_TYPES)
    assert _accepted_values(detection, "fct_verdicts", "verdict_type") == [*ANOMALY_TYPES, REGRESSION]
    for model in ("fct_anomalies", "fct_regressions"):
        assert _accepted_values(detection, model, "severity") == list(SEVERITIES)
    # The simulator injects failure modes that detection knows by the same names.
    assert set(FAULT_TYPES) <= set(ANOMALY_TYPES)
    # Superset's type filter offers the values of the mart column the dbt test above checks.
    dashboard = yaml.safe_load((ROOT / "superset/assets/dashboards/regressions_and_anomalies.yaml").read_text())
    dataset = yaml.safe_load((ROOT / "superset/assets/datasets/fct_verdicts.yaml").read_text())
    [type_filter] = [f for f in dashboard["metadata"]["native_filter_configuration"]
                     if any(t.get("column", {}).get("name") == "verdict_type" for t in f["targets"])]
    assert {t["datasetUuid"] for t in type_filter["targets"]} == {dataset["uuid"]}
    assert (dataset["schema"], dataset["table_name"], dataset["sql"]) == ("marts", "fct_verdicts", None)
