"""Helpers of the deployment checks: the tools of .venv-checks (scripts/ensure-deploy-checks.sh),
the images' build context as .dockerignore leaves it, what the Dockerfiles and docker-compose.yml
say, the Kubernetes overlays as kustomize renders them, and the services of an image stood in for
by a virtual environment installed from that context."""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from tests.support.services import wait_for

REPO = Path(__file__).resolve().parents[2]
CHECKS_BIN = REPO / ".venv-checks" / "bin"
PLATFORM_DOCKERFILE = REPO / "Dockerfile"
SUPERSET_DOCKERFILE = REPO / "deploy" / "superset" / "Dockerfile"
COMPOSE_FILE = REPO / "docker-compose.yml"
OVERLAYS = sorted(p for p in (REPO / "deploy" / "k8s" / "overlays").iterdir() if p.is_dir())
# The image's account runs the services; here an unprivileged user stands in for it.
SERVICE_USER = "nobody"


def tool(name: str) -> str:
    path = CHECKS_BIN / name
    if not path.exists():
        raise AssertionError(f"{path} is missing: run scripts/ensure-deploy-checks.sh")
    return str(path)


def run(argv: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


# --- the build context -------------------------------------------------------------------

_CONTEXT_FILES = """
import json, sys
from docker.utils.build import exclude_paths
root = sys.argv[1]
with open(root + "/.dockerignore") as f:
    # As docker-py (and the docker CLI) read the file: stripped lines, comments and blanks out.
    patterns = [line.strip() for line in f.read().splitlines()]
patterns = [p for p in patterns if p and not p.startswith("#")]
print(json.dumps(sorted(exclude_paths(root, patterns, dockerfile="Dockerfile"))))
"""


def context_files(root: Path = REPO) -> list[str]:
    """The files of the build context (relative paths), by docker-py's .dockerignore rules."""
    result = run([tool("python"), "-c", _CONTEXT_FILES, str(root)], timeout=120)
    assert result.returncode == 0, result.stderr
    return [p for p in json.loads(result.stdout) if (root / p).is_file() or (root / p).is_symlink()]


def copy_context(dest: Path, root: Path = REPO) -> list[str]:
    """Copy the build context to ``dest``, exactly as Docker would send it; returns its files."""
    files = context_files(root)
    for relative in files:
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, target, follow_symlinks=False)
    return files


# --- Dockerfiles ---------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text else "") for text in logical]


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each stage, FROM first."""
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions(dockerfile):
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def runtime_env(dockerfile: Path) -> dict[str, str]:
    """The ENV of the final stage (KEY=VALUE pairs, quotes removed)."""
    env: dict[str, str] = {}
    for name, args in stages(dockerfile)[-1]:
        if name == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def exec_form(args: str) -> list[str]:
    """A CMD, ENTRYPOINT or HEALTHCHECK CMD in exec (JSON) form."""
    return json.loads(args[args.index("[") :])


# --- docker-compose.yml --------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(KeyError):
    pass


def interpolate(value: object, env: dict[str, str]) -> object:
    """Compose's interpolation of ${NAME}, ${NAME:-default} and ${NAME:?error} (recursively)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        given = env.get(name)
        if op in (":?", "?") and (given is None or (op == ":?" and given == "")):
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and (given is None or (op == ":-" and given == "")):
            return arg
        return given or ""

    return _VARIABLE.sub(substitute, value)


def variables(value: object) -> list[re.Match]:
    """Every ${...} reference in a compose value."""
    if isinstance(value, dict):
        return [m for v in value.values() for m in variables(v)]
    if isinstance(value, list):
        return [m for v in value for m in variables(v)]
    return list(_VARIABLE.finditer(value)) if isinstance(value, str) else []


# --- Kubernetes ----------------------------------------------------------------------------


def render(overlay: Path) -> list[dict]:
    result = run([tool("kubectl"), "kustomize", str(overlay)], timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def pod_specs(docs: list[dict]) -> Iterator[tuple[dict, dict]]:
    """(workload, its pod spec) of every Deployment, StatefulSet and Job."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield doc, doc["spec"]["template"]["spec"]


def expand_env(env: list[dict], given: dict[str, str]) -> dict[str, str]:
    """A container's env as the kubelet resolves it: $(NAME) from the variables defined before
    (``given`` stands for envFrom and secrets: valueFrom entries take given[name])."""
    resolved = dict(given)
    for entry in env:
        if "value" in entry:
            resolved[entry["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: resolved.get(m[1], m[0]), entry["value"]
            )
        else:
            resolved[entry["name"]] = given[entry["name"]]
    return resolved


# --- an image, stood in for by a virtual environment installed from its build context -------


def service_user() -> str | None:
    """The unprivileged account services run as here (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    pwd.getpwnam(SERVICE_USER)
    return SERVICE_USER


def runnable_python() -> str:
    """A Python 3.11 the service user can execute (root's own may sit in its private home)."""
    user = service_user()
    for candidate in ("/usr/local/bin/python3.11", "/usr/bin/python3.11", shutil.which("python3.11") or ""):
        if not candidate or not Path(candidate).exists():
            continue
        argv = [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 11)"]
        if run((["runuser", "-u", user, "--"] if user else []) + argv, timeout=30).returncode == 0:
            return candidate
    raise AssertionError("no Python 3.11 that the service user may run")


_HELP = """
import json, sys
from click.testing import CliRunner
from bagula.cli import main
answers = []
for argv in json.loads(sys.argv[1]):
    result = CliRunner().invoke(main, [*argv[1:], "--help"])
    answers.append([result.exit_code, result.output[-2000:] + repr(result.exception or "")])
print(json.dumps(answers))
"""


@dataclass
class Image:
    """The platform image's layout on this machine: /opt/bagula is ``venv``, /var/lib/bagula and
    /tmp are folders only the service user may write."""

    venv: Path
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    _helped: dict[tuple[str, ...], tuple[int, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, venv: Path, root: Path) -> "Image":
        image = cls(venv, root)
        user = service_user()
        for writable in (image.var_lib / "dagster", image.tmp, image.pycache):
            writable.mkdir(parents=True, exist_ok=True)
            if user:
                entry = pwd.getpwnam(user)
                os.chown(writable, entry.pw_uid, entry.pw_gid)
        image.env = {key: image.path(value) for key, value in runtime_env(PLATFORM_DOCKERFILE).items()}
        image.env["PATH"] = image.env["PATH"].replace("$PATH", os.environ["PATH"])
        image.env["TMPDIR"] = str(image.tmp)
        return image

    @property
    def var_lib(self) -> Path:
        return self.root / "var-lib-bagula"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def pycache(self) -> Path:
        """Where the services' bytecode goes here (the image has it compiled at build time)."""
        return self.root / "pycache"

    def path(self, value: str) -> str:
        """An image path (in an ENV value) as laid out here."""
        layout = {"/opt/bagula": self.venv, "/var/lib/bagula": self.var_lib, "/tmp": self.tmp}
        pattern = "|".join(map(re.escape, layout))
        return re.sub(rf"(?<![\w/])({pattern})(?=/|$|:)", lambda m: str(layout[m[1]]), value)

    def argv(self, command: list[str]) -> list[str]:
        """A container's command as run here: executables from the image's PATH, as its user."""
        executable = shutil.which(command[0], path=self.env["PATH"]) or command[0]
        user = service_user()
        return (["runuser", "-u", user, "--"] if user else []) + [executable, *command[1:]]

    def run(self, command: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
        return run(self.argv(command), timeout=timeout, env=self._environment(env), cwd=self.var_lib)

    def help(self, commands: list[list[str]]) -> dict[tuple[str, ...], tuple[int, str]]:
        """``command --help`` of each command: (exit status, output); 0 only for a real (sub)command
        with options it knows. The ``bagula`` ones in one process of the image (its entry point,
        checked to be there, is ``bagula.cli:main``), the others one by one; each once."""
        wanted = [tuple(c) for c in commands if tuple(c) not in self._helped]
        ours = [c for c in wanted if c[0] == "bagula"]
        if ours:
            assert shutil.which("bagula", path=self.env["PATH"]) == str(self.venv / "bin" / "bagula")
            answer = self.run(["python", "-c", _HELP, json.dumps(ours)], {}, timeout=300)
            assert answer.returncode == 0, answer.stderr[-3000:]
            for command, (status, output) in zip(ours, json.loads(answer.stdout.splitlines()[-1]), strict=True):
                self._helped[command] = (status, output)
        for command in wanted:
            if command[0] != "bagula":
                answer = self.run([*command, "--help"], {}, timeout=120)
                self._helped[command] = (answer.returncode, answer.stdout + answer.stderr)
        return {tuple(c): self._helped[tuple(c)] for c in commands}

    def _environment(self, env: dict[str, str]) -> dict[str, str]:
        # Only what a container would have: the image's ENV and the service's own.
        base = {
            key: os.environ[key]
            for key in ("LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
            if key in os.environ
        }
        compiled = {"PYTHONPYCACHEPREFIX": str(self.pycache), "PYTHONDONTWRITEBYTECODE": ""}
        return {**base, **self.env, **compiled, **env}

    @contextmanager
    def service(self, command: list[str], env: dict[str, str]) -> Iterator["RunningService"]:
        log = tempfile.NamedTemporaryFile(prefix="bagula-deploy-", suffix=".log", delete=False)
        process = subprocess.Popen(
            self.argv(command),
            env=self._environment(env),
            cwd=self.var_lib,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        service = RunningService(process, Path(log.name))
        try:
            yield service
        finally:
            service.stop()


@dataclass
class RunningService:
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def wait_http(self, url: str, timeout: float = 120) -> httpx.Response:
        def answered() -> httpx.Response | None:
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}:\n{self.output()}")
            try:
                response = httpx.get(url, timeout=5)
            except httpx.HTTPError:
                return None
            return response if response.status_code == 200 else None

        try:
            return wait_for(answered, timeout=timeout, interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{url} did not answer 200: {exc}\n{self.output()}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            # The whole session: uvicorn's workers and Dagster's code servers and runs too.
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=10)


def compose_environment(service: str, values: dict[str, str], host: str, port: int, database: str) -> dict[str, str]:
    """A compose service's environment as a container would get it from ``values`` (the .env),
    with the database service (db:5432, databases bagula and bagula_superset) found at ``host``
    and ``port`` and the database bagula named ``database``."""
    environment = interpolate(compose()["services"][service].get("environment", {}), values)
    moved = {}
    for key, value in environment.items():
        value = str(value)
        value = re.sub(r"@db:5432/bagula(?=$|\?)", f"@{host}:{port}/{database}", value)
        moved[key] = re.sub(r"@db:5432/", f"@{host}:{port}/", value)
    return moved
