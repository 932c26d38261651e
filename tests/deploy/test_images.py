"""Both Dockerfiles: clean by hadolint, multi-stage, non-root, health-checked, on a base image
pinned by tag and digest, and at the versions the test suite runs (constraints.txt for the
platform, superset/constraints.txt and ensure-superset.sh's version for Superset)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.checks import (
    PLATFORM_DOCKERFILE,
    REPO,
    SUPERSET_DOCKERFILE,
    Image,
    instructions,
    run,
    stages,
    tool,
)

DOCKERFILES = [PLATFORM_DOCKERFILE, SUPERSET_DOCKERFILE]
PINNED_BASE = re.compile(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}")


def _pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of a constraints file (environment markers ignored)."""
    pins = {}
    for line in path.read_text().splitlines():
        found = re.match(r"^([A-Za-z0-9._-]+)==([^\s;]+)", line)
        if found:
            pins[canonicalize_name(found[1])] = found[2]
    return pins


def _hadolint(path: Path):
    return run([tool("hadolint"), "--no-color", str(path)], timeout=60)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=["platform", "superset"])
def test_hadolint_finds_nothing(dockerfile: Path):
    result = _hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_flag_what_it_should(tmp_path: Path):
    sloppy = tmp_path / "Dockerfile"
    sloppy.write_text("FROM python:latest\nRUN pip install requests\nCMD python app.py\n")
    found = _hadolint(sloppy).stdout
    assert "DL3007" in found and "DL3013" in found and "DL3025" in found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=["platform", "superset"])
def test_multi_stage_non_root_health_checked_on_a_pinned_base(dockerfile: Path):
    built = stages(dockerfile)
    assert len(built) >= 2
    bases = [args.split()[0] for stage in built for name, args in stage if name == "FROM"]
    assert all(PINNED_BASE.fullmatch(base) for base in bases), bases
    runtime = dict(built[-1])
    assert re.fullmatch(r"[1-9]\d{3,}(:[1-9]\d{3,})?", runtime["USER"]), runtime["USER"]
    assert runtime["HEALTHCHECK"].split()[-1] != "NONE" and "CMD" in runtime["HEALTHCHECK"]
    # What the runtime stage takes from the build stage is the environment, not the toolchain.
    assert any(args.startswith("--from=build ") for name, args in built[-1] if name == "COPY")


def test_both_images_share_one_base():
    bases = {args.split()[0] for path in DOCKERFILES for name, args in instructions(path) if name == "FROM"}
    assert len(bases) == 1, bases


def test_superset_image_installs_the_version_and_pins_the_suite_runs():
    args = dict(re.findall(r"ARG (\w+)=(\S+)", SUPERSET_DOCKERFILE.read_text()))
    script = (REPO / "scripts" / "ensure-superset.sh").read_text()
    assert f"superset_version={args['SUPERSET_VERSION']}\n" in script
    installed = run(
        [
            str(REPO / ".venv-superset" / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('apache-superset'))",
        ]
    ).stdout.strip()
    assert installed == args["SUPERSET_VERSION"]
    runs = " ".join(a for name, a in instructions(SUPERSET_DOCKERFILE) if name == "RUN")
    assert "--constraint /tmp/superset-constraints.txt" in runs
    assert ("COPY", "superset/constraints.txt /tmp/superset-constraints.txt") in instructions(SUPERSET_DOCKERFILE)


def test_the_platform_image_installs_with_the_suites_installer():
    args = dict(re.findall(r"ARG (\w+)=(\S+)", PLATFORM_DOCKERFILE.read_text()))
    assert _pins(REPO / "tests" / "deploy" / "tools.txt")["uv"] == args["UV_VERSION"]


def _required(distribution: str, extras: set[str], seen: dict[str, str]) -> None:
    """Every distribution ``distribution[extras]`` needs, installed here: {name: version}."""
    dist = metadata.distribution(distribution)
    seen[canonicalize_name(dist.metadata["Name"])] = dist.version
    for text in dist.requires or []:
        requirement = Requirement(text)
        if requirement.marker and not any(requirement.marker.evaluate({"extra": extra}) for extra in extras | {""}):
            continue
        name = canonicalize_name(requirement.name)
        if name not in seen:
            _required(requirement.name, set(requirement.extras), seen)


def test_the_suite_runs_exactly_the_pinned_versions():
    """scripts/ensure-venv.sh installs .venv with constraints.txt, as the image does: every package
    the platform and its tests need is pinned there, at the version installed here."""
    pins = _pins(REPO / "constraints.txt")
    needed: dict[str, str] = {}
    _required("bagula", {"dev"}, needed)
    needed.pop("bagula")
    unpinned = sorted(set(needed) - set(pins))
    assert not unpinned, f"not in constraints.txt (regenerate it: see its first lines): {unpinned}"
    assert {name: version for name, version in needed.items() if pins[name] != version} == {}


def test_the_image_installs_exactly_the_pinned_versions(platform_image: Image):
    frozen = run([tool("uv"), "pip", "freeze", "--python", str(platform_image.venv / "bin" / "python")])
    lines = frozen.stdout.splitlines()
    # A regular install of the context, not an editable one.
    assert [line for line in lines if line.startswith(("bagula ", "-e"))] == [
        f"bagula @ file://{platform_image.root / 'context'}"
    ]
    installed = dict(line.split("==") for line in lines if "==" in line)
    installed = {canonicalize_name(name): version for name, version in installed.items()}
    pins = _pins(REPO / "constraints.txt")
    assert "dagster-k8s" in installed
    assert {name: version for name, version in installed.items() if pins.get(name) != version} == {}
