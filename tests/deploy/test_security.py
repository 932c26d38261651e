"""Checkov's static security checks find no misconfiguration in the Dockerfiles, the rendered
Kubernetes overlays, or the deployment files' contents (no committed secret). Open-source Checkov
has no severities, so every failed check counts; a check is skipped only with a written reason:
below for those that do not apply to the whole deployment, in a checkov.io/skip annotation on
the one resource for the others."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.deploy.checks import (
    COMPOSE_FILE,
    OVERLAYS,
    PLATFORM_DOCKERFILE,
    REPO,
    SUPERSET_DOCKERFILE,
    render,
    run,
    tool,
)

NOT_APPLICABLE = {
    "CKV_K8S_43": "image digests: Bagula's images are built by whoever deploys them and referenced by the tag "
    "they push (set the digest in the overlay's images once pushed); TimescaleDB is pinned by digest",
    "CKV_K8S_15": "imagePullPolicy Always: release tags are never moved, and Always would make every pod start "
    "depend on the registry",
    "CKV_K8S_35": "secrets as files: the services read their settings from the environment only (as in "
    "docker-compose.yml), filled from the Secret by secretKeyRef, never written in a manifest",
}


def test_checkov_finds_no_misconfiguration(tmp_path: Path):
    files = [str(PLATFORM_DOCKERFILE), str(SUPERSET_DOCKERFILE), str(COMPOSE_FILE), str(REPO / ".env.example")]
    for overlay in OVERLAYS:
        manifest = tmp_path / f"{overlay.name}.yaml"
        manifest.write_text(yaml.safe_dump_all(render(overlay)))
        files.append(str(manifest))
    argv = [
        tool("checkov"),
        "--framework",
        "kubernetes",
        "dockerfile",
        "secrets",
        "--skip-download",
        "--skip-check",
        ",".join(NOT_APPLICABLE),
        "--output",
        "json",
        "--compact",
    ]
    for path in files:
        argv += ["--file", path]
    # --skip-download: nothing is fetched from Checkov's platform (no network here, and none needed).
    result = run(argv, timeout=600, cwd=tmp_path)
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_framework = {report["check_type"]: report for report in reports}

    assert {"kubernetes", "dockerfile"} <= set(by_framework), result.stderr[-2000:]
    for framework, report in by_framework.items():
        failed = [
            (c["check_id"], c["check_name"], c["resource"], c["file_path"]) for c in report["results"]["failed_checks"]
        ]
        assert failed == [], framework
        assert report["summary"]["parsing_errors"] == 0, framework
    assert by_framework["kubernetes"]["summary"]["resource_count"] >= 50
    assert by_framework["kubernetes"]["summary"]["passed"] > 500
    # Every skip on a single resource says why.
    for check in by_framework["kubernetes"]["results"].get("skipped_checks", []):
        reason = check["check_result"].get("suppress_comment", "")
        assert check["check_id"] in NOT_APPLICABLE or len(reason) > 20, check
