"""The Docker Compose deployment agrees with the Compose Specification and with the project, without a Docker engine.

docker-compose.yaml, Dockerfile, .dockerignore, .env.example and the scripts under deploy/compose/ are read as text
and checked: the compose file against the Compose Specification's JSON schema; every service's image, command,
health check and dependencies against what the project runs; every `${VAR}` against .env.example and back; the
Dockerfile's base image and installs against pyproject.toml; the AIRFLOW_CONN_* environment against every
connection id the configuration and the code name. Where `docker compose` (or `docker-compose`) exists, its own
`config -q` checks the file too.

compose-spec.json, beside this module, is the Compose Specification's JSON schema, copied unchanged from the public
repository compose-spec/compose-spec (file schema/compose-spec.json, last changed in commit
a08f8d51631b7127ddac3d2c65537db429d0f1d0, as of commit 170098ba07d9f53c383a41bfd4c5166b0a4529a6). It is published
under the Apache License, Version 2.0 (https://www.apache.org/licenses/LICENSE-2.0), copyright the Compose
Specification authors. To update it, copy that file again from a newer commit and name the commit here.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
SCHEMA = Path(__file__).with_name("compose-spec.json")
SCRIPTS = REPO / "deploy" / "compose"
#: Where the Dockerfile copies the repository (the build context) in the image.
IMAGE_SOURCE = "/opt/elevation"

#: The Airflow components and the `airflow` subcommand each runs (Airflow 3: the API server replaces the webserver;
#: the DAG processor is its own component; workers are the Celery provider's).
AIRFLOW_COMPONENTS = {
    "airflow-apiserver": ["api-server"],
    "airflow-scheduler": ["scheduler"],
    "airflow-dag-processor": ["dag-processor"],
    "airflow-triggerer": ["triggerer"],
    "airflow-worker": ["celery", "worker"],
}
INIT = "airflow-init"
DEMO_SERVICES = {"aws-emulator", "demo-seed"}
ONE_SHOT = {INIT, "demo-seed"}

#: `$$` (a literal dollar), `${NAME...}` with an optional operator, or a bare `$NAME`.
VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY(_|$)")
PLACEHOLDER = "change-me"


# --- reading the files ---------------------------------------------------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "docker-compose.yaml is not a mapping"
    return document


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def strings(node: Any) -> Iterator[str]:
    """Every string value (and key) of a parsed YAML document: where Compose interpolates."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def used_variables() -> dict[str, set[str]]:
    """Each variable docker-compose.yaml interpolates, with the operators it is used with ('' for plain)."""
    used: dict[str, set[str]] = {}
    for text in strings(compose()):
        for match in VARIABLE.finditer(text):
            if match.group(0) == "$$":
                continue
            name = match.group("name") or match.group("bare")
            used.setdefault(name, set()).add(match.group("op") or "")
    return used


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation (the subset the file uses): ${VAR}, ${VAR:-default}, ${VAR:?message}, $$."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name") or match.group("bare"), match.group("op"), match.group("arg")
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg
        return value or ""

    if isinstance(node, str):
        return VARIABLE.sub(one, node)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    return node


@functools.cache
def env_example() -> dict[str, tuple[str, str]]:
    """.env.example as {name: (value, the comment line right above it)}."""
    entries: dict[str, tuple[str, str]] = {}
    previous = ""
    for number, line in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f".env.example:{number}: not NAME=value: {line!r}"
            assert name not in entries, f".env.example:{number}: {name} is set twice"
            entries[name] = (value, previous)
        previous = line
    return entries


def example_env() -> dict[str, str]:
    return {name: value for name, (value, _) in env_example().items()}


@functools.cache
def resolved() -> dict[str, Any]:
    """docker-compose.yaml as Compose would see it with .env copied from .env.example."""
    return interpolate(compose(), example_env())


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def command_words(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def airflow_subcommand(service: dict[str, Any]) -> list[str]:
    """The words after `airflow`: the image's entrypoint runs `airflow <command>` (a leading `airflow` is dropped)."""
    words = command_words(service)
    return words[1:] if words[:1] == ["airflow"] else words


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    value = service.get("depends_on") or {}
    return {name: {"condition": "service_started"} for name in value} if isinstance(value, list) else value


def volume_targets(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read only) of a service's volumes, short and long syntax."""
    mounts: dict[str, tuple[str, bool]] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            mounts[target] = (source, "ro" in mode)
        else:
            mounts[volume["target"]] = (volume["source"], bool(volume.get("read_only")))
    return mounts


def airflow_services() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in resolved()["services"].items() if name.startswith("airflow-")}


@functools.cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def airflow_pin() -> str:
    pins = [dep for dep in pyproject()["project"]["dependencies"] if re.match(r"apache-airflow\s*==", dep)]
    assert len(pins) == 1, f"pyproject.toml pins apache-airflow {len(pins)} times: {pins}"
    return pins[0].split("==", 1)[1].strip()


@functools.cache
def dockerfile() -> list[tuple[str, str, str]]:
    """(stage, instruction, arguments) of every Dockerfile instruction, continuation lines joined."""
    instructions: list[tuple[str, str, str]] = []
    stage = ""
    logical = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not logical and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        logical += raw.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        instruction, _, arguments = logical.strip().partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = arguments.split()
            stage = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
        instructions.append((stage, instruction, arguments.strip()))
        logical = ""
    assert not logical, "the Dockerfile ends inside a continued line"
    return instructions


def stage_arguments(stage: str, instruction: str) -> list[str]:
    return [arguments for name, kind, arguments in dockerfile() if name == stage and kind == instruction]


def expand_arguments(text: str, args: dict[str, str]) -> str:
    """The shell's ${VAR:+word} and ${VAR}, for the Dockerfile's ARGs (enough for its RUN lines)."""
    text = re.sub(r"\$\{(\w+):\+((?:[^{}]|\{[^{}]*\})*)\}", lambda m: m.group(2) if args.get(m.group(1)) else "", text)
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), text)


def dockerfile_args(stage: str) -> dict[str, str]:
    values = {}
    for argument in stage_arguments(stage, "ARG"):
        name, _, default = argument.partition("=")
        values[name] = shlex.split(default)[0] if default.strip() else ""
    return values


def pip_installs(stage: str, args: dict[str, str]) -> list[list[str]]:
    """The targets (requirements, paths) of every `pip install` in the stage's RUN lines, options left out."""
    installs = []
    for run in stage_arguments(stage, "RUN"):
        for part in re.split(r"&&|\|\||;", expand_arguments(run, args)):
            words = shlex.split(part)
            if words[:2] != ["pip", "install"]:
                continue
            targets, skip = [], False
            for word in words[2:]:
                if skip:
                    skip = False
                elif word in ("-c", "--constraint", "-r", "--requirement", "-e", "--editable", "-i", "--index-url"):
                    skip = word in ("-c", "--constraint", "-i", "--index-url")
                    if not skip:
                        targets.append(word)  # requirement files and editables are targets of their own kind
                elif not word.startswith("-"):
                    targets.append(word)
            installs.append(targets)
    return installs


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative, with /) out of the build context: the last pattern matching
    the path or one of its parent folders decides; `!` re-includes."""
    excluded = False
    for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        regex = "".join(
            ".*" if token == "**" else "[^/]*" if token == "*" else "[^/]" if token == "?" else re.escape(token)
            for token in re.split(r"(\*\*|\*|\?)", pattern)
        )
        parts = path.split("/")
        prefixes = ["/".join(parts[: end + 1]) for end in range(len(parts))]
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


# --- the Compose Specification -------------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    problems = [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
                for error in validator.iter_errors(compose())]
    assert not problems, "docker-compose.yaml does not follow the Compose Specification:\n" + "\n".join(problems)
    assert schema.get("title") == "Compose Specification"


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_docker_compose_accepts_the_file_with_the_example_env(tmp_path: Path) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed: validated by the schema only")
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    clean = {key: value for key, value in os.environ.items() if key not in env_example()}
    for profile in ([], ["--profile", "demo"]):
        result = subprocess.run([*command, "--project-directory", str(REPO), "-f", str(COMPOSE), "--env-file",
                                 str(env_file), *profile, "config", "-q"],
                                capture_output=True, text=True, env=clean, check=False, timeout=60)
        assert result.returncode == 0, f"{' '.join(command)} config -q {' '.join(profile)}: {result.stderr}"


# --- services ------------------------------------------------------------------------------------------------


def test_every_airflow_component_runs_its_airflow_subcommand_from_this_repository_s_image() -> None:
    found = airflow_services()
    assert set(found) == set(AIRFLOW_COMPONENTS) | {INIT}, f"Airflow services: {sorted(found)}"
    stages = {name for name, kind, _ in dockerfile() if kind == "FROM" and name}
    images = set()
    for name, expected in AIRFLOW_COMPONENTS.items():
        service = found[name]
        assert airflow_subcommand(service) == expected, f"{name} runs {command_words(service)}, not airflow {expected}"
        build = service.get("build")
        assert isinstance(build, dict) and build.get("context") == "." and build.get("target") in stages, (
            f"{name} is not built from ./Dockerfile's stages {sorted(stages)}: {build}")
        assert build.get("target") == "elevation", f"{name} must run the deployment image, not {build.get('target')}"
        images.add(service.get("image"))
    assert len(images) == 1, f"the Airflow components run different images: {images}"


def test_the_entrypoint_wraps_the_image_s_own(tmp_path: Path) -> None:
    """Every Airflow service starts through deploy/compose/entrypoint.sh, which is in the image and hands over to
    the image's /entrypoint with the service's command."""
    for name, service in airflow_services().items():
        entrypoint = service.get("entrypoint")
        assert isinstance(entrypoint, list) and entrypoint[:2] == ["/usr/bin/dumb-init", "--"], (
            f"{name}: the entrypoint must keep dumb-init (signals to Airflow): {entrypoint}")
        script = entrypoint[-1]
        assert script.startswith(IMAGE_SOURCE + "/"), f"{name}: {script} is not from the copied repository"
        relative = script.removeprefix(IMAGE_SOURCE + "/")
        assert (REPO / relative).is_file() and not dockerignored(relative), f"{name}: {relative} is not in the image"
    text = (SCRIPTS / "entrypoint.sh").read_text(encoding="utf-8")
    assert re.search(r'^exec "\$\{AIRFLOW_IMAGE_ENTRYPOINT:-/entrypoint\}" "\$@"$', text, re.M), (
        "entrypoint.sh must end by exec'ing the image's /entrypoint with the command")


def test_workers_are_scalable_celery_workers() -> None:
    worker = resolved()["services"]["airflow-worker"]
    assert airflow_subcommand(worker) == ["celery", "worker"]
    assert "container_name" not in worker, "a container name forbids --scale airflow-worker=N"
    assert not worker.get("ports"), "fixed host ports forbid --scale airflow-worker=N"
    env = environment(worker)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://") and "@redis:" in env["AIRFLOW__CELERY__BROKER_URL"]
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://"), (
        "the driver named: SQLAlchemy 2.1 reads postgresql:// as psycopg 3, which pyproject.toml does not install")
    assert env.get("DUMB_INIT_SETSID") == "0", "Celery's warm shutdown needs DUMB_INIT_SETSID=0"
    for name, service in resolved()["services"].items():
        assert "container_name" not in service, f"{name} has a container name: two projects could not coexist"


def test_every_long_running_service_has_a_health_check_and_a_restart_policy() -> None:
    everything = resolved()["services"]
    for name, service in everything.items():
        if name in ONE_SHOT:
            assert service.get("restart", "no") == "no", f"{name} is one-shot: restarting it would loop"
            assert "healthcheck" not in service, f"{name} is one-shot: others wait for it to complete instead"
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and check.get("interval") and check.get("retries"), f"{name}: no health check"
        assert service.get("restart") in ("always", "unless-stopped"), f"{name}: no restart policy"
    expected = {
        "airflow-apiserver": r"curl --fail http://localhost:8080/api/v2/",
        "airflow-scheduler": r"curl --fail http://localhost:8974/health",
        "airflow-dag-processor": r"airflow jobs check --job-type DagProcessorJob --hostname \"\$\{HOSTNAME\}\"",
        "airflow-triggerer": r"airflow jobs check --job-type TriggererJob --hostname \"\$\{HOSTNAME\}\"",
        "airflow-worker": r"celery --app airflow\.providers\.celery\.executors\.celery_executor\.app inspect ping "
                          r"-d \"celery@\$\{HOSTNAME\}\"",
        "postgres": r"pg_isready -U airflow",
        "redis": r"redis-cli ping",
        "aws-emulator": r"curl --fail --silent http://localhost:5000/_emulator/status",
    }
    for name, pattern in expected.items():
        test = everything[name]["healthcheck"]["test"]
        words = " ".join(test[1:]) if isinstance(test, list) else test
        assert test[0] in ("CMD", "CMD-SHELL") if isinstance(test, list) else True
        assert re.search(pattern, words), f"{name}'s health check {words!r} is not {pattern!r}"
    scheduler = environment(everything["airflow-scheduler"])
    assert scheduler["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true", "the scheduler's :8974/health needs it"
    emulator_port = command_words(everything["aws-emulator"])
    assert emulator_port[emulator_port.index("--port") + 1] == "5000"


def test_dependencies_name_services_and_everything_airflow_waits_for_the_init() -> None:
    everything = services()
    for name, service in everything.items():
        for dependency, condition in depends_on(service).items():
            assert dependency in everything, f"{name} depends on {dependency}, which is no service"
            assert condition.get("condition") in ("service_started", "service_healthy",
                                                  "service_completed_successfully"), f"{name} -> {dependency}"
            if dependency in ONE_SHOT:
                assert condition["condition"] == "service_completed_successfully", f"{name} -> {dependency}"
            elif condition["condition"] == "service_healthy":
                assert "healthcheck" in everything[dependency], f"{name} waits for {dependency}'s missing check"
            if everything[dependency].get("profiles") and not service.get("profiles"):
                assert condition.get("required") is False, (
                    f"{name} (always on) needs {dependency} (profiles {everything[dependency]['profiles']}): "
                    "without `required: false` `docker compose up` without the profile fails")
    for name in AIRFLOW_COMPONENTS:
        needs = depends_on(everything[name])
        assert needs.get(INIT, {}).get("condition") == "service_completed_successfully", f"{name} skips {INIT}"
        assert {"postgres", "redis"} <= set(needs), f"{name} starts before its database and broker"
    assert depends_on(everything["airflow-worker"])["airflow-apiserver"]["condition"] == "service_healthy", (
        "workers run tasks through the API server's execution API")
    assert {"postgres", "redis"} <= set(depends_on(everything[INIT]))

    def cycle_from(name: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        if name in path:
            return (*path, name)
        for dependency in depends_on(everything[name]):
            found = cycle_from(dependency, (*path, name))
            if found:
                return found
        return None

    for name in everything:
        assert cycle_from(name, ()) is None, f"dependency cycle: {' -> '.join(cycle_from(name, ()) or ())}"


def test_the_init_migrates_both_databases_and_makes_the_pool() -> None:
    init = resolved()["services"][INIT]
    words = command_words(init)
    assert words[0] == "bash" and words[1].startswith(IMAGE_SOURCE + "/"), f"{INIT} runs {words}"
    script = REPO / words[1].removeprefix(IMAGE_SOURCE + "/")
    assert script.is_file() and not dockerignored(str(script.relative_to(REPO))), f"{script} is not in the image"
    steps = [line.strip() for line in script.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert "set -euo pipefail" in steps, "a failing step must fail the init (the Airflow services then wait)"
    migrate = steps.index("airflow db migrate")
    upgrade = next(i for i, step in enumerate(steps) if step.startswith("elevation db upgrade "))
    assert migrate < upgrade, "the pool needs Airflow's metadata database migrated first"
    upgrade_words = shlex.split(steps[upgrade])
    assert "--database-url" in upgrade_words and "--no-pool" not in upgrade_words
    assert upgrade_words[upgrade_words.index("--database-url") + 1] == "${ELEVATION_DATABASE_URL:?}"

    from elevation.cli import build_parser
    from elevation.pools import IDENTITY_CENTER_POOL

    args = build_parser().parse_args(upgrade_words[1:-1] + ["postgresql://x"])
    assert (args.command, args.db_command, args.database_url, args.no_pool) == ("db", "upgrade", "postgresql://x", False)
    assert any(step.startswith(f"if ! airflow pools get {IDENTITY_CENTER_POOL} ") for step in steps), (
        "the init must fail when the grant task's pool is missing")

    import sqlalchemy as sa

    queue = sa.engine.make_url(environment(init)["ELEVATION_DATABASE_URL"])
    assert (queue.get_backend_name(), queue.host, queue.database, queue.username) == (
        "postgresql", "postgres", "elevation", "elevation")
    metadata = sa.engine.make_url(environment(init)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (metadata.host, metadata.database) == ("postgres", "airflow") and metadata.database != queue.database
    postgres = resolved()["services"]["postgres"]
    initdb = {target: source for target, (source, _) in volume_targets(postgres).items()
              if target.startswith("/docker-entrypoint-initdb.d/")}
    assert len(initdb) == 1, f"postgres mounts {initdb} into /docker-entrypoint-initdb.d"
    ((target, source),) = initdb.items()
    sql = (REPO / source).read_text(encoding="utf-8")
    assert target.endswith(".sh") and f"CREATE DATABASE {queue.database} OWNER {queue.username};" in sql
    assert re.search(rf"CREATE ROLE {queue.username} LOGIN\b", sql)
    assert environment(postgres)["POSTGRES_DB"] == metadata.database
    assert environment(postgres)["POSTGRES_USER"] == metadata.username


def test_the_scripts_are_valid_bash_and_python() -> None:
    for script in sorted(SCRIPTS.glob("*.sh")):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"
        text = script.read_text(encoding="utf-8")
        assert text.startswith("#!/usr/bin/env bash\n"), f"{script.name}: no bash shebang"
        for number, body in enumerate(re.findall(r"<<'PY'\n(.*?)\nPY\n", text, re.S)):
            compile(body, f"{script.name}:python#{number}", "exec")


def test_the_init_writes_the_airflow_users_passwords(tmp_path: Path) -> None:
    """Step 5 of airflow-init.sh, run as it is with the compose environment: the admin and the API user get their
    .env passwords, the demo's people theirs, a user who has one keeps it, a new one gets a random one."""
    text = (SCRIPTS / "airflow-init.sh").read_text(encoding="utf-8")
    (body,) = [body for body in re.findall(r"<<'PY'\n(.*?)\nPY\n", text, re.S) if "PASSWORDS_FILE" in body]
    init_env = environment(resolved()["services"][INIT])
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"bob": "generated", "admin": "old"}), encoding="utf-8")
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps({"alice": "alice-pw"}), encoding="utf-8")
    env = {**init_env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
           "ELEVATION_DEMO_PASSWORDS": str(demo), "PATH": os.environ["PATH"]}
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] += ", bob:user,alice:user , carol:user"
    result = subprocess.run([sys.executable, "-c", body], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    api = json.loads(init_env["AIRFLOW_CONN_ELEVATION_AIRFLOW_API"])
    written = json.loads(passwords.read_text(encoding="utf-8"))
    carol = written.pop("carol")  # listed without a password: a random one, kept in the file and never printed
    assert len(carol) >= 20 and carol not in result.stdout + result.stderr and "carol" in result.stdout
    assert written == {
        "bob": "generated", "admin": init_env["AIRFLOW_ADMIN_PASSWORD"], "alice": "alice-pw",
        api["login"]: api["password"]}
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = "admin:admin"
    refused = subprocess.run([sys.executable, "-c", body], env=env, capture_output=True, text=True, check=False)
    assert refused.returncode != 0 and api["login"] in refused.stderr


def test_the_airflow_environment_is_shared_by_every_component() -> None:
    common = environment(interpolate(compose()["x-airflow-common"], example_env()))
    assert common["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert common["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert common["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CELERY__BROKER_URL",
                "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY"):
        assert common.get(key), f"x-airflow-common sets no {key}"
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY"):
        raw = compose()["x-airflow-common"]["environment"][key]
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", raw), f"{key} must come from .env, required: {raw!r}"
    for name, service in airflow_services().items():
        env = environment(service)
        missing = {key for key, value in common.items() if env.get(key) != value}
        assert not missing, f"{name} does not get the common environment: {sorted(missing)}"
        mounts = volume_targets(service)
        assert env["ELEVATION_CONFIG"] in mounts and mounts[env["ELEVATION_CONFIG"]][1], (
            f"{name}: ELEVATION_CONFIG {env['ELEVATION_CONFIG']} is not a read-only mount")
        assert (REPO / mounts[env["ELEVATION_CONFIG"]][0]).is_file(), "the example's ELEVATION_CONFIG_FILE is missing"
    apiserver = volume_targets(airflow_services()["airflow-apiserver"])
    passwords = Path(common["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).parent
    assert str(passwords) in apiserver and str(passwords) in volume_targets(airflow_services()[INIT])
    assert str(passwords) not in volume_targets(airflow_services()["airflow-worker"]), (
        "the admin's password file has no business on the workers")
    declared = set(compose().get("volumes") or {})
    for name, service in services().items():
        for source, _ in volume_targets(service).values():
            if not source.startswith(("/", ".", "$")):
                assert source in declared, f"{name} mounts the undeclared volume {source}"


# --- the Dockerfile ------------------------------------------------------------------------------------------


def test_the_image_is_the_pinned_airflow_on_a_python_the_project_allows() -> None:
    (base,) = [arguments.split()[0] for stage, kind, arguments in dockerfile() if kind == "FROM"][:1]
    match = re.fullmatch(r"apache/airflow:(?P<airflow>[0-9][^-]*)-python(?P<python>3\.[0-9]+)", base)
    assert match, f"the first stage is not FROM apache/airflow:<version>-python<version>: {base}"
    assert match["airflow"] == airflow_pin(), (
        f"the image's Airflow {match['airflow']} is not pyproject.toml's apache-airflow=={airflow_pin()}")
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    assert match["python"] in requires, f"Python {match['python']} is outside requires-python {requires}"
    other_bases = [arguments.split()[0] for stage, kind, arguments in dockerfile() if kind == "FROM"][1:]
    stages = {stage for stage, kind, _ in dockerfile() if kind == "FROM" and stage}
    assert all(other in stages for other in other_bases), f"a later stage starts from elsewhere: {other_bases}"


def test_the_image_installs_exactly_pyproject_s_dependencies() -> None:
    """The deployment stage installs the project itself from the copied repository (so the package set is
    pyproject.toml's [project].dependencies by construction), nothing else, with or without the constraints ARG."""
    copies = [shlex.split(arguments) for arguments in stage_arguments("elevation", "COPY")]
    copied_repository = [words[-1] for words in copies if words[-2:-1] == ["."]]
    assert copied_repository == [IMAGE_SOURCE], f"the build context is not copied to {IMAGE_SOURCE}: {copies}"
    args = dockerfile_args("elevation")
    for constraint in ("", "https://example.invalid/constraints.txt"):
        installs = pip_installs("elevation", {**args, "PIP_CONSTRAINT_URL": constraint})
        assert installs == [[IMAGE_SOURCE]], f"the deployment stage installs {installs}, not just the project"
    runs = " ".join(stage_arguments("elevation", "RUN") + stage_arguments("demo", "RUN"))
    assert not re.search(r"\b(apt-get|apt|uv|conda|pip3|python -m pip|easy_install)\b.*\binstall\b", runs), runs
    installs = pip_installs("demo", dockerfile_args("demo"))
    extras = pyproject()["project"].get("optional-dependencies", {})
    assert installs == [[f"{IMAGE_SOURCE}[dev]"]], f"the demo stage installs {installs}"
    assert any(dep.startswith("moto") for dep in extras["dev"]), "the emulator needs moto from the dev extra"
    for needed in ("pyproject.toml", "README.md", "plugins/elevation/__init__.py", "plugins/elevation_plugin.py",
                   "sql/migrations/env.py", "sql/postgresql_intake_role.sql", "dags/elevation_grants.py",
                   "config/elevation.example.yaml", "deploy/compose/airflow-init.sh",
                   *(str(path.relative_to(REPO)) for path in (REPO / "reports" / "templates").rglob("*")
                     if path.is_file())):
        assert (REPO / needed).exists(), f"{needed} is gone: update this test"
        assert not dockerignored(needed), f".dockerignore keeps {needed} out of the image"
    for kept_out in (".venv/bin/python", ".git/HEAD", ".env", ".demo/airflow.log", ".airflow/logs/x",
                     "plugins/elevation/__pycache__/x.pyc", ".pytest_cache/v", ".ruff_cache/x", ".sandbox/queue.db"):
        assert dockerignored(kept_out), f".dockerignore lets {kept_out} into the build context"


def test_the_image_puts_the_dags_where_airflow_reads_them() -> None:
    env = {}
    for arguments in stage_arguments("elevation", "ENV"):
        for word in shlex.split(arguments):
            key, _, value = word.partition("=")
            env[key] = value
    copies = {shlex.split(arguments)[-1].rstrip("/"): shlex.split(arguments)[-2].rstrip("/")
              for arguments in stage_arguments("elevation", "COPY")}
    assert copies.get(env["AIRFLOW__CORE__DAGS_FOLDER"]) == "dags", f"dags/ is not copied to {env}"
    plugins = env["AIRFLOW__CORE__PLUGINS_FOLDER"]
    assert copies.get(f"{plugins}/elevation_plugin.py") == "plugins/elevation_plugin.py"
    assert any(source == "config/elevation.example.yaml" for source in copies.values())
    for name, service in airflow_services().items():
        overridden = {"AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER"} & set(environment(service))
        assert not overridden, f"{name} points Airflow away from the image's folders: {overridden}"
        assert environment(service)["ELEVATION_CONFIG"] == env["ELEVATION_CONFIG"]
    mounted = {target for service in airflow_services().values() for target in volume_targets(service)}
    made = " ".join(stage_arguments("elevation", "RUN"))
    for target in mounted - {env["ELEVATION_CONFIG"]}:
        assert target in made or target == "/opt/airflow/logs", (
            f"{target} is mounted but the image does not create it (a new volume would be root's)")


# --- .env.example --------------------------------------------------------------------------------------------


def test_every_variable_the_compose_file_uses_is_documented_and_none_is_stale() -> None:
    used, documented = set(used_variables()), set(env_example())
    assert not used - documented, f"used in docker-compose.yaml, missing from .env.example: {sorted(used - documented)}"
    assert not documented - used, f"in .env.example, used nowhere in docker-compose.yaml: {sorted(documented - used)}"
    for name, (_, comment) in env_example().items():
        assert comment.startswith("# ") and len(comment) > 10, f".env.example: {name} has no comment line above it"
    for name, operators in used_variables().items():
        assert operators <= {"", ":?", ":-"}, f"{name} is used with {operators}: keep to ${{X}}, :? and :-"


def test_secrets_are_required_and_the_example_has_none() -> None:
    used = used_variables()
    secrets = [name for name in env_example() if SECRET_NAME.search(name)]
    assert len(secrets) >= 7, f"too few secrets recognised: {secrets}"
    for name in secrets:
        value = example_env()[name]
        assert value in ("", PLACEHOLDER), f".env.example gives {name} a value that looks real: {value!r}"
        if value == PLACEHOLDER:
            assert used[name] == {":?"}, f"{name} must be required (${{{name}:?message}}) wherever it is used"
    text = ENV_EXAMPLE.read_text(encoding="utf-8") + COMPOSE.read_text(encoding="utf-8")
    for pattern in (r"AKIA[0-9A-Z]{16}", r"xox[abpr]-[0-9A-Za-z-]+", r"\b[0-9a-f]{32,}\b"):
        assert not re.search(pattern, text), f"something secret-looking ({pattern}) in .env.example or the compose file"
    for run in re.findall(r"[A-Za-z0-9+/_-]{32,}=*", text):  # base64-like: long, digits and both cases mixed
        assert not all(re.search(kind, run) for kind in ("[0-9]", "[a-z]", "[A-Z]")), f"a key-like value: {run}"
    for line in (REPO / ".gitignore").read_text(encoding="utf-8").splitlines():
        if line.strip() == ".env":
            break
    else:
        pytest.fail(".gitignore does not ignore .env")
    assert dockerignored(".env") and not dockerignored(".env.example")


def test_new_env_writes_fresh_secrets_once(tmp_path: Path) -> None:
    if not shutil.which("openssl"):
        pytest.skip("deploy/compose/new-env.sh needs openssl")
    target = tmp_path / ".env"
    result = subprocess.run(["bash", str(SCRIPTS / "new-env.sh"), str(target)], capture_output=True, text=True,
                            check=False, timeout=30)
    assert result.returncode == 0, result.stderr
    written = dict(line.split("=", 1) for line in target.read_text(encoding="utf-8").splitlines()
                   if line and not line.startswith("#"))
    assert list(written) == list(env_example()), "new-env.sh must keep .env.example's variables, in order"
    for name, value in written.items():
        if example_env()[name] == PLACEHOLDER:
            assert value != PLACEHOLDER and re.fullmatch(r"[A-Za-z0-9_=-]{32,}", value), f"{name}={value!r}"
        else:
            assert value == example_env()[name], f"new-env.sh changed {name}"
    from cryptography.fernet import Fernet

    Fernet(written["AIRFLOW_FERNET_KEY"])  # a usable key, not just random text
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    again = subprocess.run(["bash", str(SCRIPTS / "new-env.sh"), str(target)], capture_output=True, text=True,
                           check=False, timeout=30)
    assert again.returncode != 0 and json.dumps(written) == json.dumps(
        dict(line.split("=", 1) for line in target.read_text(encoding="utf-8").splitlines()
             if line and not line.startswith("#"))), "new-env.sh overwrote an existing .env"


# --- connections ---------------------------------------------------------------------------------------------


def connection_ids_of_the_project() -> dict[str, str]:
    """Every Airflow connection id the configuration (the example file and the defaults) and the package's code
    name, with the kind of connection each must be ("aws", "database", "slack" or "" when the code does not say)."""
    from pydantic import BaseModel

    from elevation.config import ElevationConfig, load_config

    ids: dict[str, str] = {}

    def kind_of(field: str) -> str:
        if field in ("aws", "aws_conn_id") or field.endswith(("s3_conn_id", "lake_conn_id", "reports_conn_id")):
            return "aws"
        return {"database": "database", "slack_conn_id": "slack"}.get(field, "")

    def walk(model: BaseModel, in_connections: bool = False) -> None:
        for field in type(model).model_fields:
            value = getattr(model, field)
            if isinstance(value, BaseModel):
                walk(value, field == "connections")
            elif isinstance(value, str) and (in_connections or field.endswith("conn_id")):
                ids[value] = kind_of(field)

    walk(load_config(REPO / "config" / "elevation.example.yaml"))
    walk(ElevationConfig())
    constant = re.compile(r"^\s*(?P<name>\w*conn_id\w*)\s*(?::[^=\n]+)?=\s*\"(?P<id>[A-Za-z0-9_.-]+)\"", re.I | re.M)
    sources = [path for path in (REPO / "plugins").rglob("*.py") if "devkit" not in path.parts]
    sources += sorted((REPO / "dags").glob("*.py"))
    for path in sources:
        for match in constant.finditer(path.read_text(encoding="utf-8")):
            ids.setdefault(match["id"], kind_of(match["name"].lower()))
    return ids


def test_every_connection_the_project_uses_is_in_the_compose_environment() -> None:
    project = connection_ids_of_the_project()
    assert {"aws_default", "elevation_db", "slack_api_default", "elevation_slack_signing",
            "elevation_airflow_api"} <= set(project), f"the search found too little: {sorted(project)}"
    common = environment(resolved()["x-airflow-common"])
    defined = {key.removeprefix("AIRFLOW_CONN_").lower(): value for key, value in common.items()
               if key.startswith("AIRFLOW_CONN_")}
    assert not set(project) - set(defined), f"no AIRFLOW_CONN_ for {sorted(set(project) - set(defined))}"
    assert not set(defined) - set(project), f"AIRFLOW_CONN_ for ids nothing uses: {sorted(set(defined) - set(project))}"
    expected_type = {"aws": {"aws"}, "database": {"postgres", "postgresql"}, "slack": {"slack"}}
    for conn_id, value in defined.items():
        try:
            connection = json.loads(value)
        except json.JSONDecodeError as error:
            pytest.fail(f"AIRFLOW_CONN_{conn_id.upper()} is not JSON once interpolated: {error}: {value}")
        kind = project[conn_id]
        if kind:
            assert connection["conn_type"] in expected_type[kind], f"{conn_id} is a {kind} connection: {connection}"
        if kind == "aws":
            assert "endpoint_url" not in connection.get("extra", {}), f"{conn_id} must reach AWS itself"
    api = json.loads(defined["elevation_airflow_api"])
    assert api["host"] == "http://airflow-apiserver:8080", "the API user must reach the API server by service name"
    database = json.loads(defined["elevation_db"])
    queue = __import__("sqlalchemy").engine.make_url(common["ELEVATION_DATABASE_URL"])
    assert (database["host"], database["schema"], database["login"], database["password"]) == (
        queue.host, queue.database, queue.username, queue.password), "elevation_db and ELEVATION_DATABASE_URL differ"


# --- the demo profile ----------------------------------------------------------------------------------------


def test_the_demo_profile_runs_the_emulator_and_seeds_what_the_airflow_containers_read() -> None:
    from elevation.devkit import compose_demo

    everything = resolved()["services"]
    profiled = {name for name, service in everything.items() if service.get("profiles")}
    assert profiled == DEMO_SERVICES and all(everything[name]["profiles"] == ["demo"] for name in profiled)
    for name in profiled:
        assert everything[name]["build"] == {"context": ".", "target": "demo"}, f"{name} needs the demo image (moto)"
        words = command_words(everything[name])
        assert words[:3] == ["python", "-m", "elevation.devkit.compose_demo"], f"{name} runs {words}"
        compose_demo.build_parser().parse_args(words[3:])  # exits (fails the test) on arguments it does not take
    serve = compose_demo.build_parser().parse_args(command_words(everything["aws-emulator"])[3:])
    seed = compose_demo.build_parser().parse_args(command_words(everything["demo-seed"])[3:])
    assert (serve.command, seed.command) == ("serve", "seed")
    assert serve.host == "0.0.0.0", "the emulator must listen beyond its own container's loopback"  # noqa: S104
    assert seed.endpoint_url == f"http://aws-emulator:{serve.port}", "the seed and the overlay name the emulator"
    assert depends_on(everything["demo-seed"])["aws-emulator"]["condition"] == "service_healthy"
    assert depends_on(everything[INIT])["demo-seed"] == {"condition": "service_completed_successfully",
                                                         "required": False}
    seed_mounts = volume_targets(everything["demo-seed"])
    assert seed_mounts.get(str(seed.dir)) == ("elevation-demo", False), f"the seed writes {seed.dir}: {seed_mounts}"
    for name, service in airflow_services().items():
        mounts = volume_targets(service)
        assert mounts.get(str(seed.dir)) == ("elevation-demo", True), f"{name} does not read the demo volume"
        for option in ("data_dir", "reports_dir"):
            assert str(getattr(seed, option)) in mounts, f"{name} lacks the demo's {option} {getattr(seed, option)}"
    overlay_default = re.search(r'overlay="\$\{ELEVATION_DEMO_OVERLAY:-(?P<path>[^}]+)\}"',
                                (SCRIPTS / "entrypoint.sh").read_text(encoding="utf-8"))
    assert overlay_default and overlay_default["path"] == str(seed.dir / compose_demo.OVERLAY_FILE)
    common = environment(resolved()["x-airflow-common"])
    aws = {key.removeprefix("AIRFLOW_CONN_").lower() for key, value in common.items()
           if key.startswith("AIRFLOW_CONN_") and json.loads(value)["conn_type"] == "aws"}
    assert set(compose_demo.AWS_CONNECTIONS) == aws, "the demo must point every AWS connection at the emulator"


class _Emulator(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200 if self.path == "/_emulator/status" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def _entrypoint(overlay: Path, users: str = "admin:admin,elevation-system:user", *, demo: bool,
                expect_ok: bool = True) -> tuple[dict[str, str], str]:
    """Run deploy/compose/entrypoint.sh with `env` as the image's entrypoint: the environment it hands over."""
    env = {"PATH": os.environ["PATH"], "ELEVATION_DEMO_OVERLAY": str(overlay), "AIRFLOW_IMAGE_ENTRYPOINT": "env",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": users, "ELEVATION_CONFIG": "/opt/airflow/config/elevation.yaml",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": "/opt/airflow/auth/passwords.json",
           "AIRFLOW_CONN_AWS_DEFAULT": '{"conn_type": "aws"}', "ELEVATION_DEMO_MODE": "true" if demo else "false"}
    result = subprocess.run(["bash", str(SCRIPTS / "entrypoint.sh")], env=env, capture_output=True, text=True,
                            check=False, timeout=30)
    assert (result.returncode == 0) == expect_ok, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line), result.stderr


def test_the_entrypoint_applies_the_demo_overlay_only_in_a_demo_project_with_its_emulator(tmp_path: Path) -> None:
    """A deployment (ELEVATION_DEMO_MODE false) never takes the overlay, even with a demo's volume and emulator
    left behind; a demo project takes it, and refuses to start when its emulator does not answer."""
    if not shutil.which("curl"):
        pytest.skip("deploy/compose/entrypoint.sh uses curl (the Airflow image has it)")
    from elevation.devkit.compose_demo import OVERLAY_FILE, RemoteEmulator, demo_passwords, overlay
    from elevation.devkit.sandbox import _write_env

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Emulator)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        path = tmp_path / OVERLAY_FILE
        _write_env(path, overlay(RemoteEmulator(url), tmp_path))
        env, said = _entrypoint(path, demo=True)
        assert env["ELEVATION_CONFIG"] == str(tmp_path / "elevation.yaml"), said
        for conn_id in ("AIRFLOW_CONN_AWS_DEFAULT", "AIRFLOW_CONN_AWS_CLOUDTRAIL_LOGS"):
            assert json.loads(env[conn_id])["extra"]["endpoint_url"] == url
        people = ",".join(f"{login}:USER" for login in demo_passwords())
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == f"admin:admin,elevation-system:user,{people}"
        # known demo passwords never land in the deployment's passwords file
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == "/opt/airflow/auth/passwords.demo.json"
        assert "demo profile" in said
        # A deployment with the demo's overlay and a live emulator beside it: untouched.
        env, said = _entrypoint(path, demo=False)
        assert "ELEVATION_EMULATOR_URL" not in env and env["ELEVATION_CONFIG"] == "/opt/airflow/config/elevation.yaml"
        assert env["AIRFLOW_CONN_AWS_DEFAULT"] == '{"conn_type": "aws"}' and "ignored" in said
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,elevation-system:user"
    finally:
        server.shutdown()
        server.server_close()
    _, said = _entrypoint(path, demo=True, expect_ok=False)  # a demo whose emulator is gone: it does not start
    assert "no AWS emulator answers" in said
    _, said = _entrypoint(tmp_path / "absent.env", demo=True, expect_ok=False)
    assert "no demo overlay" in said
    env, said = _entrypoint(tmp_path / "absent.env", demo=False)  # no demo at all: nothing said, nothing changed
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,elevation-system:user" and not said
