"""The deployment files against DESIGN.md ("Deployment" and "Public contract").

No Docker engine runs here, so docker-compose.yml, the Dockerfile and .dockerignore are read
as data and checked for what the production shape needs: every service, pinned images, one app
image, the LIFECYCLE_* settings, start-up order, and our search attributes on the namespace.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from graphlib import TopologicalSorter
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from stripe_lifecycle.domain import contract
from stripe_lifecycle.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SERVICES = {
    "temporal-db",
    "temporal-schema",
    "temporal",
    "temporal-namespace",
    "temporal-setup",
    "temporal-ui",
    "db",
    "migrate",
    "api",
    "worker",
    "mailpit",
}
# Services running our own image, with the command each one runs.
APP_COMMANDS = {
    "migrate": ["lifecycle", "migrate"],
    "temporal-setup": ["lifecycle", "temporal-setup"],
    "api": ["lifecycle", "api"],
    "worker": ["lifecycle", "worker"],
}
# The image each third-party service runs.
THIRD_PARTY_IMAGES = {
    "temporal-db": "postgres",
    "db": "postgres",
    "temporal-schema": "temporalio/admin-tools",
    "temporal": "temporalio/server",
    "temporal-namespace": "temporalio/admin-tools",
    "temporal-ui": "temporalio/ui",
    "mailpit": "axllent/mailpit",
}

# DESIGN.md "Public contract": the search attributes, with their Temporal types.
DESIGN_SEARCH_ATTRIBUTES = {
    "CustomerId": "Keyword",
    "CustomerEmail": "Keyword",
    "Lifecycle": "Keyword",
    "Automation": "Keyword",
    "BillingStatus": "Keyword",
    "Plan": "Keyword",
    "MrrCents": "Int",
    "Livemode": "Bool",
    # "Billing truth, segments and campaigns": a Keyword-list of the customer's segments.
    "Segments": "KeywordList",
}

# Settings every production process gets (DESIGN.md "Public contract", "Deployment").
APP_ENV_NAMES = {
    "LIFECYCLE_DATABASE_URL",
    "LIFECYCLE_TEMPORAL_ADDRESS",
    "LIFECYCLE_TEMPORAL_NAMESPACE",
    "LIFECYCLE_TASK_QUEUE",
    "LIFECYCLE_STRIPE_WEBHOOK_SECRET",
    "LIFECYCLE_STRIPE_API_KEY",
    "LIFECYCLE_API_KEYS",
    "LIFECYCLE_MAIL_TRANSPORT",
    "LIFECYCLE_SMTP_HOST",
    "LIFECYCLE_SMTP_PORT",
    "LIFECYCLE_MAIL_FROM",
    "LIFECYCLE_PUBLIC_URL",
    "LIFECYCLE_LINK_SECRET",
}
REQUIRED_SECRETS = (
    "LIFECYCLE_STRIPE_WEBHOOK_SECRET",
    "LIFECYCLE_API_KEYS",
    "LIFECYCLE_LINK_SECRET",
)
OPTIONAL_SECRETS = (
    "LIFECYCLE_STRIPE_API_KEY",
    "LIFECYCLE_POSTMARK_SERVER_TOKEN",
    "LIFECYCLE_POSTMARK_WEBHOOK_PASSWORD",
    "LIFECYCLE_PAYLOAD_KEY",
    "LIFECYCLE_PAYLOAD_OLD_KEYS",
)
# What an operator might put in .env for the required secrets.
OPERATOR_ENV = {
    "LIFECYCLE_STRIPE_WEBHOOK_SECRET": "whsec_test",
    "LIFECYCLE_API_KEYS": "admin:k-admin-Rz4mW8qT2vN6xB9s,support:k-support-Hc3pL7yF5jD1gK8e",
    "LIFECYCLE_LINK_SECRET": "a-long-random-link-secret-Ua8Ze3Wr6Yn1Xq4Tm",
}

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}
_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariableError(LookupError):
    """Compose would refuse to start: a `${VAR:?message}` variable is unset."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Resolve a value the way `docker compose` does, given the host environment and .env."""

    def resolve(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = env.get(name)
        empty_is_unset = op is not None and op.startswith(":")
        is_set = current is not None and (current != "" or not empty_is_unset)
        if is_set:
            assert current is not None
            return current
        if op in (":?", "?"):
            raise MissingVariableError(f"{name}: {arg}")
        if op in (":-", "-"):
            return arg
        return ""

    return _INTERPOLATION.sub(resolve, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping."""
    return env_mapping(service.get("environment") or {})


def env_mapping(raw: Mapping[str, Any] | list[str]) -> dict[str, str | None]:
    """An `environment` block as a mapping (Compose accepts a list of KEY=value too)."""
    if isinstance(raw, list):
        pairs = (item.partition("=") for item in raw)
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {key: None if value is None else str(value) for key, value in raw.items()}


def resolved_environment(
    service: Mapping[str, Any], env: Mapping[str, str] = OPERATOR_ENV
) -> dict[str, str]:
    """What the container gets; a variable without a value passes through only if set."""
    resolved: dict[str, str] = {}
    for key, value in environment(service).items():
        if value is not None:
            resolved[key] = interpolate(value, env)
        elif key in env:
            resolved[key] = env[key]
    return resolved


def command(service: Mapping[str, Any]) -> list[str]:
    raw = service.get("command")
    if isinstance(raw, str):
        return shlex.split(raw)
    assert isinstance(raw, list), f"no command in {service}"
    return [str(part) for part in raw]


def split_image(image: str) -> tuple[str, str]:
    name, _, tag = image.partition("@")[0].rpartition(":")
    return (name, tag) if name and "/" not in tag else (image, "")


def host_path(service: Mapping[str, Any], container_path: str) -> Path:
    """The file in the repository that a bind mount of the service shows at container_path."""
    for volume in service.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        target = rest.split(":")[0]
        if source.startswith(".") and PurePosixPath(container_path).is_relative_to(target):
            relative = PurePosixPath(container_path).relative_to(target)
            return ROOT / source / relative
    raise AssertionError(f"{container_path} is not bind-mounted from the repository")


def published(service: Mapping[str, Any]) -> dict[int, str]:
    """Container port -> host binding ("8000" or "127.0.0.1:8000")."""
    ports: dict[int, str] = {}
    for entry in service.get("ports", []):
        host, _, container = str(entry).rpartition(":")
        ports[int(container.split("/")[0])] = host
    return ports


def test_production_services_exist_in_a_compose_spec_file(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert "version" not in compose, "the top-level `version` key is obsolete in the Compose spec"
    assert SERVICES <= set(services)


def test_third_party_images_are_current_and_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, repository in THIRD_PARTY_IMAGES.items():
        image, tag = split_image(services[name]["image"])
        assert image == repository, name
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: pin {image} by tag"
    everything = yaml.safe_dump(services)
    assert "temporalio/auto-setup" not in everything, "auto-setup is deprecated: use server"
    server_tag = split_image(services["temporal"]["image"])[1]
    for tools in ("temporal-schema", "temporal-namespace"):
        assert split_image(services[tools]["image"])[1] == server_tag, (
            f"{tools}: admin-tools must match the server version it sets up"
        )


def test_app_processes_run_one_image_built_from_the_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    images = set()
    for name, expected in APP_COMMANDS.items():
        service = services[name]
        build = service["build"]
        assert (ROOT / build["context"]).resolve() == ROOT, name
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile", name
        assert command(service) == expected, name
        images.add(service["image"])
    assert len(images) == 1, f"one image for api, worker and one-shots, got {images}"
    assert split_image(images.pop())[1] not in ("", "latest")


def test_api_listens_on_the_published_port(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    env = resolved_environment(api)
    port = int(env.get("LIFECYCLE_API_PORT", "8000"))
    assert port == 8000
    assert published(api)[port] == "8000", "the API is what Stripe and support reach"
    assert env["LIFECYCLE_API_HOST"] == "0.0.0.0", "loopback is unreachable from outside"
    probe = " ".join(api["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in probe


def test_app_env_uses_the_settings_names(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    known = {f"LIFECYCLE_{field.upper()}" for field in Settings.model_fields}
    shared = env_mapping(compose["x-app-env"])
    for name in APP_COMMANDS:
        env = environment(services[name])
        assert set(env) >= APP_ENV_NAMES, name
        assert set(env) <= known, f"{name}: not a setting: {sorted(set(env) - known)}"
        extra = set(env) - set(shared)
        assert extra <= ({"LIFECYCLE_API_HOST", "LIFECYCLE_API_PORT"} if name == "api" else set())
        assert {key: env[key] for key in shared} == shared, f"{name}: diverges from x-app-env"


def test_app_env_points_at_the_compose_services(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = resolved_environment(services["worker"])
    url = urlsplit(env["LIFECYCLE_DATABASE_URL"])
    assert url.scheme == "postgresql+asyncpg"
    assert url.hostname == "db" and (url.port or 5432) == 5432
    db_env = resolved_environment(services["db"])
    assert url.username == db_env["POSTGRES_USER"]
    assert url.password == db_env["POSTGRES_PASSWORD"]
    assert url.path == f"/{db_env['POSTGRES_DB']}"

    assert env["LIFECYCLE_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["LIFECYCLE_TEMPORAL_NAMESPACE"] == "default"
    assert env["LIFECYCLE_TASK_QUEUE"]
    assert env["LIFECYCLE_MAIL_TRANSPORT"] == "smtp"
    assert env["LIFECYCLE_SMTP_HOST"] == "mailpit"
    assert int(env["LIFECYCLE_SMTP_PORT"]) == 1025
    assert env["LIFECYCLE_MAIL_FROM"]
    assert env["LIFECYCLE_PUBLIC_URL"].startswith(("http://", "https://"))

    # The app's own validation accepts what the containers get (no .env in the way).
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.stripe_api_key is None, "an unset optional secret must stay unset"
    assert [key.role for key in settings.parsed_api_keys()] == ["admin", "support"]


def test_secrets_come_from_the_host_environment(compose: dict[str, Any]) -> None:
    shared = env_mapping(compose["x-app-env"])
    for name in REQUIRED_SECRETS:
        value = shared[name]
        assert value is not None and value.startswith(f"${{{name}:?"), f"{name}: require it"
        with pytest.raises(MissingVariableError, match=name):
            interpolate(value, {})
    for name in OPTIONAL_SECRETS:
        value = shared[name]
        assert value is None or value == f"${{{name}:-}}", f"{name}: no default for a secret"
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"whsec_\w|sk_(live|test)_\w", text), "a real-looking secret"


def test_depends_on_conditions_are_satisfiable(services: dict[str, dict[str, Any]]) -> None:
    graph: dict[str, set[str]] = {}
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: give every dependency a condition"
        graph[name] = set(depends_on)
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                test = services[target].get("healthcheck", {}).get("test")
                assert test and test != ["NONE"], f"{target} needs a healthcheck for {name}"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} is a one-shot"
            else:
                assert condition == "service_started", condition
    tuple(TopologicalSorter(graph).static_order())  # raises CycleError on a cycle


@pytest.mark.parametrize(
    ("service", "dependency", "condition"),
    [
        ("temporal-schema", "temporal-db", "service_healthy"),
        ("temporal", "temporal-schema", "service_completed_successfully"),
        ("temporal-namespace", "temporal", "service_healthy"),
        ("temporal-setup", "temporal-namespace", "service_completed_successfully"),
        ("temporal-ui", "temporal", "service_healthy"),
        ("migrate", "db", "service_healthy"),
        ("api", "migrate", "service_completed_successfully"),
        ("api", "temporal", "service_healthy"),
        ("api", "temporal-setup", "service_completed_successfully"),
        ("worker", "migrate", "service_completed_successfully"),
        ("worker", "temporal", "service_healthy"),
        ("worker", "temporal-setup", "service_completed_successfully"),
    ],
)
def test_start_up_order(
    services: dict[str, dict[str, Any]], service: str, dependency: str, condition: str
) -> None:
    assert services[service]["depends_on"][dependency]["condition"] == condition


def test_databases_keep_their_data_and_report_health(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name in ("temporal-db", "db"):
        service = services[name]
        volume, _, target = service["volumes"][0].partition(":")
        assert volume in compose["volumes"], f"{name}: use a named volume"
        assert target == "/var/lib/postgresql/data"
        assert "pg_isready" in " ".join(service["healthcheck"]["test"])


def test_temporal_runs_on_its_own_postgres(services: dict[str, dict[str, Any]]) -> None:
    server = services["temporal"]
    env = resolved_environment(server)
    assert env["DB"] == "postgres12"
    assert env["POSTGRES_SEEDS"] == "temporal-db"
    assert env["POSTGRES_PWD"] == resolved_environment(services["temporal-db"])["POSTGRES_PASSWORD"]
    assert host_path(server, env["DYNAMIC_CONFIG_FILE_PATH"]).is_file()
    assert "7233" in " ".join(server["healthcheck"]["test"])

    schema = services["temporal-schema"]
    script = host_path(schema, command(schema)[-1]).read_text()
    for versioned in ("temporal/versioned", "visibility/versioned"):
        assert versioned in script
    assert "setup-schema" in script and "update-schema" in script

    ui = services["temporal-ui"]
    assert resolved_environment(ui)["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert 8080 in published(ui)


def test_the_stripe_reads_queue_runs_in_one_partition(services: dict[str, dict[str, Any]]) -> None:
    """Temporal divides a queue's rate cap evenly over its partitions: the reads queue
    reaches LIFECYCLE_STRIPE_READ_RATE only in one (README "Historical sync")."""
    server = services["temporal"]
    path = host_path(server, resolved_environment(server)["DYNAMIC_CONFIG_FILE_PATH"])
    config = yaml.safe_load(path.read_text())
    task_queue = resolved_environment(services["worker"])["LIFECYCLE_TASK_QUEUE"]
    one = [
        {
            "value": 1,
            "constraints": {
                "taskQueueName": contract.stripe_reads_queue(task_queue),
                "taskType": "Activity",
            },
        }
    ]
    assert config["matching.numTaskqueueReadPartitions"] == one
    assert config["matching.numTaskqueueWritePartitions"] == one


def test_namespace_and_search_attributes_are_set_up(
    services: dict[str, dict[str, Any]],
) -> None:
    namespace = services["temporal-namespace"]
    env = resolved_environment(namespace)
    app_env = resolved_environment(services["worker"])
    assert env["NAMESPACE"] == app_env["LIFECYCLE_TEMPORAL_NAMESPACE"]
    assert env["TEMPORAL_ADDRESS"] == app_env["LIFECYCLE_TEMPORAL_ADDRESS"]
    script = host_path(namespace, command(namespace)[-1]).read_text()
    assert "operator namespace create" in script

    # `lifecycle temporal-setup` registers contract.SEARCH_ATTRIBUTES, on the app's namespace.
    setup = services["temporal-setup"]
    assert command(setup) == ["lifecycle", "temporal-setup"]
    assert resolved_environment(setup)["LIFECYCLE_TEMPORAL_NAMESPACE"] == env["NAMESPACE"]
    registered = {
        key.name: key.indexed_value_type.name.title().replace("_", "")
        for key in contract.SEARCH_ATTRIBUTES
    }
    assert registered == DESIGN_SEARCH_ATTRIBUTES


def test_mailpit_catches_the_mail(services: dict[str, dict[str, Any]]) -> None:
    ports = published(services["mailpit"])
    assert {1025, 8025} <= set(ports)
    assert services["worker"]["depends_on"]["mailpit"]["condition"] == "service_started"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions: list[tuple[str, str]] = []
    for line in logical.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, arguments = stripped.partition(" ")
            instructions.append((keyword.upper(), " ".join(arguments.split())))
    return instructions


def test_dockerfile_installs_the_package_and_runs_it_as_a_user() -> None:
    instructions = dockerfile_instructions()
    bases = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(bases) == 1 and re.fullmatch(r"python:3\.1[12]-slim(-\w+)?", bases[0])

    copied = {
        source
        for keyword, args in instructions
        if keyword == "COPY"
        for source in args.split()[:-1]
        if not source.startswith("--")
    }
    assert copied == {"pyproject.toml", "README.md", "src"}, "copy in only what the build needs"

    runs = [args for keyword, args in instructions if keyword == "RUN"]
    install = next(i for i, args in enumerate(instructions) if "pip install" in args[1])
    assert any(re.search(r"pip install --no-cache-dir \.(\s|$)", args) for args in runs)

    users = [(i, args) for i, (keyword, args) in enumerate(instructions) if keyword == "USER"]
    assert users, "the image must not run as root"
    last_index, last_user = users[-1]
    assert last_index > install
    assert last_user.split(":")[0] not in ("root", "0")
    assert ("CMD", '["lifecycle", "api"]') in instructions


def test_dockerignore_keeps_the_build_context_to_the_package() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "exclude everything (.git, .venv, data, .env, caches) first"
    reincluded = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    assert reincluded == {"pyproject.toml", "README.md", "src"}
    assert "**/__pycache__" in patterns
