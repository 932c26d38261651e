"""The Superset image, without a container engine: .venv-superset (the same Superset version and
constraints the image installs) stands in for its environment, and the files its Dockerfile copies
are laid out as in the image. docker-compose.yml's superset-init and superset, with their commands
and environments (the database moved to the test cluster), set up Superset's metadata in the
database `bagula db roles` made for it and serve the dashboards, reading the marts as the
read-only role."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from bagula.localdb import free_port
from tests.deploy.checks import REPO, SUPERSET_DOCKERFILE, compose, compose_environment, instructions, runtime_env
from tests.deploy.conftest import ROLE_ENV, new_database
from tests.support.cli import bagula
from tests.support.services import wait_for

SUPERSET_VENV = REPO / ".venv-superset"
DASHBOARDS = len(list((REPO / "superset" / "assets" / "dashboards").glob("*.yaml")))

pytestmark = pytest.mark.timeout(600)


def _lay_out(root: Path) -> dict[str, Path]:
    """The files deploy/superset/Dockerfile copies, under ``root`` as in the image; the image's
    paths mapped to here: {image path: path here}."""
    layout = {"/opt/superset": SUPERSET_VENV, "/tmp": root / "tmp"}
    for name, args in instructions(SUPERSET_DOCKERFILE):
        if name == "COPY" and not args.startswith("--from") and args.split()[-1].startswith("/opt/bagula-superset"):
            *sources, target = args.split()
            for source in sources:
                destination = root / target.lstrip("/")
                if target.endswith("/"):
                    destination = destination / Path(source).name
                destination.parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if (REPO / source).is_dir() else shutil.copy2)(REPO / source, destination)
    layout["/opt/bagula-superset"] = root / "opt" / "bagula-superset"
    (root / "tmp").mkdir()
    return layout


def _here(value: str, layout: dict[str, Path]) -> str:
    pattern = "|".join(map(re.escape, layout))
    return re.sub(rf"(?<![\w/])({pattern})(?=/|$|:| )", lambda m: str(layout[m[1]]), value)


def test_superset_init_and_serve_as_compose_runs_them(pg):
    url = new_database(pg, "superset")
    dotenv = {
        **ROLE_ENV,
        "POSTGRES_PASSWORD": pg.password_file.read_text().strip(),
        "BAGULA_SUPERSET_SECRET_KEY": "a-test-secret-key-of-some-length",
        "BAGULA_SUPERSET_ADMIN_PASSWORD": "admin-pw",
    }
    roles = bagula(url, "db", "roles", **ROLE_ENV)
    assert roles.returncode == 0, roles.stderr

    root = Path(tempfile.mkdtemp(prefix="bagula-superset-image-"))
    try:
        layout = _lay_out(root)
        port = free_port()
        image_env = {key: _here(value, layout) for key, value in runtime_env(SUPERSET_DOCKERFILE).items()}
        image_env["PATH"] = image_env["PATH"].replace("$PATH", os.environ["PATH"])
        # Here on a free port of the loopback interface, not 0.0.0.0:8088.
        image_env["GUNICORN_CMD_ARGS"] = image_env["GUNICORN_CMD_ARGS"].replace("0.0.0.0:8088", f"127.0.0.1:{port}")
        database = urlsplit(url).path.lstrip("/")

        def environment(service: str) -> dict[str, str]:
            return {**image_env, **compose_environment(service, dotenv, "127.0.0.1", pg.port, database)}

        def command(service: str) -> list[str]:
            argv = [_here(arg, layout) for arg in compose()["services"][service]["command"]]
            return [shutil.which(argv[0], path=image_env["PATH"]), *argv[1:]]

        init = subprocess.run(
            command("superset-init"),
            env=environment("superset-init"),
            cwd=layout["/tmp"],
            capture_output=True,
            text=True,
            timeout=500,
        )
        assert init.returncode == 0, init.stderr[-4000:]
        assert '"admin": "created"' in init.stdout.strip().splitlines()[-1]

        log = root / "superset.log"
        with log.open("w") as output:
            server = subprocess.Popen(
                command("superset"),
                env=environment("superset"),
                cwd=layout["/tmp"],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        try:

            def healthy() -> bool:
                assert server.poll() is None, log.read_text()[-4000:]
                try:
                    return httpx.get(base + "/health", timeout=5).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(healthy, timeout=180, interval=1)
            with httpx.Client(base_url=base, timeout=60) as client:
                login = client.post(
                    "/api/v1/security/login",
                    json={"username": "admin", "password": "admin-pw", "provider": "db", "refresh": True},
                )
                assert login.status_code == 200, login.text
                client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
                dashboards = client.get("/api/v1/dashboard/", params={"q": "(page_size:100)"}).json()
                assert dashboards["count"] == DASHBOARDS
                (connection,) = client.get("/api/v1/database/").json()["result"]
                uri = client.get(f"/api/v1/database/{connection['id']}/connection").json()["result"]["sqlalchemy_uri"]
                assert urlsplit(uri).username == "bagula_superset_reader"
                assert urlsplit(uri).path == f"/{database}"
        finally:
            # gunicorn's quick shutdown: nothing to drain here. What this test checks is done by
            # now; a slow stop on a busy machine ends with SIGKILL rather than failing it.
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=30)
    finally:
        shutil.rmtree(root, ignore_errors=True)
