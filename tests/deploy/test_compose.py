"""docker-compose.yml: valid by the Compose Specification's schema, every command and health check
real in its image, secrets only from the environment and never defaulted, only the API and
Superset published, every service restarted, limited and on the role made for it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from bagula.roles import DAGSTER, INGEST, SUPERSET, SUPERSET_DATABASE, TRANSFORM, RolePasswords
from bagula.settings import SupersetSettings
from bagula.superset import marts_sqlalchemy_uri
from tests.deploy.checks import (
    COMPOSE_FILE,
    REPO,
    SUPERSET_DOCKERFILE,
    Image,
    MissingVariable,
    compose,
    exec_form,
    instructions,
    interpolate,
    run,
    tool,
    variables,
)

SERVICES = compose()["services"]
PLATFORM = [name for name, s in SERVICES.items() if s["image"].startswith("bagula/platform:")]
SUPERSET_SERVICES = [name for name, s in SERVICES.items() if s["image"].startswith("bagula/superset:")]
ONE_SHOTS = ["init", "superset-init"]
SUPERSET_VENV = REPO / ".venv-superset"


def _env_example() -> tuple[list[str], list[str]]:
    """(required variables: empty in .env.example, optional ones: commented out)."""
    text = (REPO / ".env.example").read_text()
    required = re.findall(r"^([A-Z][A-Z0-9_]*)=$", text, re.M)
    optional = re.findall(r"^#([A-Z][A-Z0-9_]*)=", text, re.M)
    return required, optional


def _filled_env() -> dict[str, str]:
    return {name: f"{name.lower()}-value" for name in _env_example()[0]}


def _schema_check(path: Path):
    return run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)], timeout=120)


def test_it_validates_against_the_compose_specification(tmp_path: Path):
    assert _schema_check(COMPOSE_FILE).returncode == 0, _schema_check(COMPOSE_FILE).stdout
    # The schema is strict enough to catch a misspelt field.
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["api"]["restart_policy"] = "always"
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    assert _schema_check(tmp_path / "docker-compose.yml").returncode != 0


def test_the_dagster_proxy_override_validates_and_fits_the_base():
    override_file = REPO / "deploy" / "compose" / "dagster-proxy.yml"
    assert _schema_check(override_file).returncode == 0, _schema_check(override_file).stdout
    override = yaml.safe_load(override_file.read_text())
    (proxy,) = override["services"].values()
    assert re.fullmatch(r"caddy:[\d.]+-alpine@sha256:[0-9a-f]{64}", proxy["image"])
    assert set(proxy["depends_on"]) <= set(SERVICES) and set(proxy["networks"]) <= set(compose()["networks"])
    for match in variables(override):
        if re.search(r"PASSWORD|USER", match["name"]):
            assert match["op"] == ":?", match[0]


def test_every_reference_points_at_something_declared():
    spec = compose()
    for name, service in SERVICES.items():
        assert set(service.get("depends_on", {})) <= set(SERVICES) - {name}, name
        assert set(service["networks"]) <= set(spec["networks"]), name
        for mount in service.get("volumes", []):
            assert mount.split(":")[0] in spec["volumes"], (name, mount)


def test_platform_commands_and_health_checks_are_real_in_the_platform_image(platform_image: Image):
    checks = {}
    for name in PLATFORM:
        service = SERVICES[name]
        checks[name] = [service["command"]]
        if not service["healthcheck"].get("disable"):
            checks[name].append(service["healthcheck"]["test"][1:])
    # A real subcommand, options included: --help parses them and exits 0.
    helped = platform_image.help(
        [argv for argvs in checks.values() for argv in argvs if argv[0] in ("bagula", "dagster-daemon")]
    )
    for name, argvs in checks.items():
        for argv in argvs:
            if argv[0] in ("bagula", "dagster-daemon"):
                status, output = helped[tuple(argv)]
                assert status == 0, (name, argv, output)
            else:
                found = shutil.which(argv[0], path=platform_image.env["PATH"])
                assert found and Path(found).parent == platform_image.venv / "bin", (name, argv)


def _superset_image_files() -> dict[str, Path]:
    """What deploy/superset/Dockerfile copies from the context: {path in the image: source}."""
    copied = {}
    for name, args in instructions(SUPERSET_DOCKERFILE):
        if name != "COPY" or args.startswith("--from"):
            continue
        *sources, target = args.split()
        for source in sources:
            source_path = REPO / source
            paths = source_path.rglob("*") if source_path.is_dir() else [source_path]
            for path in paths:
                if target.endswith("/"):
                    image_path = target + path.relative_to(source_path.parent).as_posix()
                else:
                    image_path = (
                        target + "/" + path.relative_to(source_path).as_posix() if source_path.is_dir() else target
                    )
                copied[image_path] = path
    return copied


def test_superset_commands_and_health_checks_are_real_in_the_superset_image():
    # .venv-superset holds what the image installs (the same version and constraints).
    files = _superset_image_files()
    assert "/opt/bagula-superset/bootstrap.py" in files and "/opt/bagula-superset/assets/metadata.yaml" in files
    for name in SUPERSET_SERVICES:
        service = SERVICES[name]
        checks = [service["command"]]
        if not service["healthcheck"].get("disable"):
            checks.append(service["healthcheck"]["test"][1:])
        for argv in checks:
            assert (SUPERSET_VENV / "bin" / argv[0]).exists(), (name, argv)
            scripts = [arg for arg in argv[1:] if arg.startswith("/opt/")]
            for script in scripts:
                assert script in files or any(path.startswith(script + "/") for path in files), (name, script)
    assert exec_form(dict(instructions(SUPERSET_DOCKERFILE))["CMD"]) == SERVICES["superset"]["command"]


def test_secrets_come_only_from_the_environment_and_have_no_default():
    secret_like = re.compile(r"PASSWORD|SECRET|KEY")
    for match in variables(compose()):
        if secret_like.search(match["name"]):
            assert match["op"] == ":?", f"{match[0]} must be required, without a default"
    # Nothing secret is written into the file itself.
    for service in SERVICES.values():
        for key, value in service.get("environment", {}).items():
            if secret_like.search(key) and key != "BAGULA_SUPERSET_ADMIN_USERNAME":
                assert "${" in str(value), key
    # .env.example asks for exactly the required variables, and a copy left empty is refused.
    required = sorted({m["name"] for m in variables(compose()) if m["op"] == ":?"})
    assert sorted(_env_example()[0]) == required
    with pytest.raises(MissingVariable):
        interpolate(compose(), {name: "" for name in required})
    assert interpolate(compose(), _filled_env())


def test_optional_settings_documented_in_env_example_are_the_defaulted_ones():
    defaulted = {m["name"] for m in variables(compose()) if m["op"] == ":-"}
    assert defaulted <= set(_env_example()[1]) | {"BAGULA_SUPERSET_ADMIN_USERNAME"}


def test_only_the_api_and_superset_are_published_dagster_on_localhost():
    published = {name: service["ports"] for name, service in SERVICES.items() if "ports" in service}
    assert set(published) == {"api", "superset", "dagster-webserver"}
    for name in ("api", "superset"):
        (port,) = interpolate(published[name], {})
        assert re.fullmatch(r"\d+:\d+", port), port  # every interface
    (dagster,) = interpolate(published["dagster-webserver"], {})
    assert dagster == "127.0.0.1:3000:3000"
    assert compose()["networks"]["backend"]["internal"] is True
    assert SERVICES["db"]["networks"] == ["backend"]


def test_services_restart_are_limited_and_checked_and_one_shots_gate_the_rest():
    for name, service in SERVICES.items():
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and limits["memory"], name
        if name in ONE_SHOTS:
            assert service["restart"] == "no", name
            continue
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
    for name in ("api", "live", "dagster-webserver", "dagster-daemon", "superset-init"):
        assert SERVICES[name]["depends_on"]["init"]["condition"] == "service_completed_successfully", name
    assert SERVICES["superset"]["depends_on"]["superset-init"]["condition"] == "service_completed_successfully"
    assert SERVICES["init"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in PLATFORM + SUPERSET_SERVICES:
        assert SERVICES[name]["read_only"] is True and SERVICES[name]["cap_drop"] == ["ALL"], name


def test_the_live_path_runs_once_with_somewhere_to_write():
    live = SERVICES["live"]
    assert live["command"] == ["bagula", "pipeline", "live"]
    # One process holds the pipeline lock: no replicas, no fixed name to scale around.
    assert live.get("deploy", {}).get("replicas", 1) == 1 and "scale" not in live
    # Read-only root: dbt writes under /tmp (a tmpfs), Dagster's instance file on its volume.
    assert live["read_only"] is True and live["tmpfs"] == ["/tmp"]
    assert "dagster-home:/var/lib/bagula/dagster" in live["volumes"]
    assert set(live["networks"]) == {"backend", "frontend"}  # webhooks are outside


def test_images_are_pinned():
    assert re.fullmatch(r"timescale/timescaledb:\d+\.\d+\.\d+-pg\d+@sha256:[0-9a-f]{64}", SERVICES["db"]["image"])
    for name in PLATFORM + SUPERSET_SERVICES:
        assert re.fullmatch(r"bagula/(platform|superset):\d+\.\d+\.\d+", SERVICES[name]["image"]), name


def test_each_service_connects_as_the_role_made_for_it():
    env = _filled_env()

    def url(service: str, key: str):
        return urlsplit(interpolate(SERVICES[service]["environment"][key], env))

    assert url("init", "BAGULA_DATABASE_URL").username == "bagula"  # the owner: migrations, roles
    assert url("api", "BAGULA_DATABASE_URL").username == INGEST
    for name in ("live", "dagster-webserver", "dagster-daemon"):
        assert url(name, "BAGULA_DATABASE_URL").username == TRANSFORM
        storage = url(name, "BAGULA_DAGSTER_STORAGE_URL")
        assert (storage.scheme, storage.username) == ("postgresql+psycopg2", DAGSTER)
    for name in SUPERSET_SERVICES:
        metadata = url(name, "BAGULA_SUPERSET_METADATA_DB_URL")
        assert (metadata.username, metadata.path) == (SUPERSET, f"/{SUPERSET_DATABASE}")
    # The passwords `bagula db roles` reads are the ones the URLs carry.
    init_env = interpolate(SERVICES["init"]["environment"], env)
    roles = RolePasswords(
        _env_file=None,
        **{k.removeprefix("BAGULA_DB_").lower(): v for k, v in init_env.items() if k.startswith("BAGULA_DB_")},
    )
    assert roles.ingest_password.get_secret_value() == url("api", "BAGULA_DATABASE_URL").password
    assert roles.transform_password.get_secret_value() == url("dagster-daemon", "BAGULA_DATABASE_URL").password
    assert roles.dagster_password.get_secret_value() == url("dagster-daemon", "BAGULA_DAGSTER_STORAGE_URL").password
    assert roles.superset_password.get_secret_value() == url("superset", "BAGULA_SUPERSET_METADATA_DB_URL").password
    # Superset reads the marts as `bagula superset init` would point it at them.
    init = interpolate(SERVICES["superset-init"]["environment"], env)
    reader = SupersetSettings(_env_file=None).reader_role
    owner = interpolate(SERVICES["init"]["environment"]["BAGULA_DATABASE_URL"], env)
    assert init["BAGULA_SUPERSET_MARTS_URI"] == marts_sqlalchemy_uri(owner, reader)
    assert init["BAGULA_SUPERSET_MARTS_PASSWORD"] == init_env["BAGULA_SUPERSET_READER_PASSWORD"]
