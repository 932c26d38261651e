"""Fixtures of the deployment checks: the platform image stood in for by a virtual environment
installed from its build context, and databases of their own in the test cluster."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from bagula.localdb import LocalPostgres
from bagula.roles import DAGSTER, INGEST, SUPERSET, TRANSFORM
from ingest_api import db
from tests.deploy.checks import Image, copy_context, run, runnable_python, tool

# The services' passwords in these tests, as a deployment's .env or Secret would give them.
ROLE_PASSWORDS = {
    INGEST: "ingest-pw-1",
    TRANSFORM: "transform-pw-1",
    DAGSTER: "dagster-pw-1",
    SUPERSET: "superset-pw-1",
    "bagula_superset_reader": "reader-pw-1",
}
ROLE_ENV = {
    "BAGULA_DB_INGEST_PASSWORD": ROLE_PASSWORDS[INGEST],
    "BAGULA_DB_TRANSFORM_PASSWORD": ROLE_PASSWORDS[TRANSFORM],
    "BAGULA_DB_DAGSTER_PASSWORD": ROLE_PASSWORDS[DAGSTER],
    "BAGULA_DB_SUPERSET_PASSWORD": ROLE_PASSWORDS[SUPERSET],
    "BAGULA_SUPERSET_READER_PASSWORD": ROLE_PASSWORDS["bagula_superset_reader"],
}


def as_role(url: str, role: str, scheme: str | None = None) -> str:
    """The database URL as another role (with its test password)."""
    parts = urlsplit(url)
    netloc = f"{role}:{quote(ROLE_PASSWORDS[role], safe='')}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(scheme=scheme or parts.scheme, netloc=netloc))


def new_database(cluster: LocalPostgres, prefix: str) -> str:
    """A database of its own in the test cluster, migrated; its owner's URL."""
    url = cluster.create_database(f"{prefix}_{uuid.uuid4().hex[:8]}")
    db.upgrade(url)
    return url


@pytest.fixture(scope="session")
def platform_image() -> Iterator[Image]:
    """The platform image's environment, installed from its build context exactly as the
    Dockerfile does (a regular install at the versions of constraints.txt, extra k8s; the dbt
    project beside it with its manifest parsed); readable, not writable, by the service user."""
    root = Path(tempfile.mkdtemp(prefix="bagula-image-"))
    root.chmod(0o755)
    context = root / "context"
    copy_context(context)
    venv = root / "opt-bagula"
    uv = tool("uv")
    made = run([uv, "venv", "--quiet", "--python", runnable_python(), str(venv)])
    assert made.returncode == 0, made.stderr
    # Not compiled ahead, unlike the image (UV_COMPILE_BYTECODE): compiling every installed module
    # costs a minute here; the services compile what they import, once, into a cache of their own
    # (Image.pycache), and the environment itself stays unwritable to them.
    installed = run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            "--constraint",
            str(context / "constraints.txt"),
            f"{context}[k8s]",
        ],
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr[-4000:]
    shutil.copytree(context / "dbt_project", venv / "dbt_project")
    parsed = run(
        [str(venv / "bin" / "python"), "-c", "from orchestration.dbt import ensure_manifest; ensure_manifest()"],
        env={
            **os.environ,
            "BAGULA_DBT_PROJECT_DIR": str(venv / "dbt_project"),
            "DBT_LOG_PATH": str(root / "build-logs"),
        },
        cwd=root,
    )
    assert parsed.returncode == 0, parsed.stdout[-3000:] + parsed.stderr[-3000:]
    yield Image.of(venv, root)
    shutil.rmtree(root, ignore_errors=True)
