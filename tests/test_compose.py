"""docker-compose.yml and Dockerfile, checked without a Docker engine: services, Kafka KRaft
listeners, topics as streams/topics.py defines them, mounts of files that exist, ports that match
the Prometheus scrape config, and flags/environment variables the trackwatch CLI really reads."""

from __future__ import annotations

import base64
import fnmatch
import itertools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from streams.ops import grafana
from streams.settings import ENV_PREFIX, Settings, load_write_keys
from streams.topics import default_topics

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROMETHEUS = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text("utf-8"))
_VAR = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose variable interpolation with every variable unset: `${X:-d}` -> d, `$$` -> `$`."""
    return _VAR.sub(lambda m: m.group("default") or "", value).replace("$$", "$")


def env(service: str) -> dict[str, str]:
    raw = SERVICES[service].get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: interpolate(str(v)) for k, v in raw.items()}


def mounts(service: str) -> list[tuple[str, str]]:
    """(host source, container target) of each bind mount (sources starting with . or /)."""
    result = []
    for volume in SERVICES[service].get("volumes", []):
        source, target, *_ = interpolate(volume).split(":")
        if source.startswith((".", "/")):
            result.append((source, target))
    return result


def flags(command: list[str]) -> dict[str, str]:
    return {a: b for a, b in itertools.pairwise(command) if a.startswith("--")}


def test_the_production_services_are_there() -> None:
    assert {"kafka", "topics", "worker", "collector", "prometheus", "grafana"} <= set(SERVICES)


def test_bind_mounts_point_to_files_that_exist() -> None:
    found = 0
    for name in SERVICES:
        for source, _ in mounts(name):
            assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            found += 1
    assert found >= 6


def test_published_host_ports_do_not_collide() -> None:
    published = [
        str(port).split(":")[0] for svc in SERVICES.values() for port in svc.get("ports", [])
    ]
    assert len(published) == len(set(published))
    assert "8080" in published and "3000" in published and "9090" in published


# --- Kafka ------------------------------------------------------------------------------------


def _listeners(value: str) -> dict[str, str]:
    """`NAME://host:port,...` -> {NAME: 'host:port'}."""
    return dict(item.split("://", 1) for item in value.split(","))


def test_kafka_runs_kraft_with_consistent_listeners() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    e = env("kafka")
    assert set(e["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = _listeners(e["KAFKA_LISTENERS"])
    advertised = _listeners(e["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":") for item in e["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    controller = e["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert set(listeners) <= set(protocols)
    assert set(advertised) <= set(listeners) and controller not in advertised
    assert controller in listeners and e["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    # Advertised ports are the ports the listeners bind.
    for name, address in advertised.items():
        assert address.rsplit(":", 1)[1] == listeners[name].rsplit(":", 1)[1], name
    voter_id, voter = e["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert voter_id == str(e["KAFKA_NODE_ID"])
    assert voter.rsplit(":", 1)[1] == listeners[controller].rsplit(":", 1)[1]
    assert voter.split(":")[0] in {"kafka", kafka.get("hostname")}
    # A single broker cannot replicate internal topics three times.
    assert e["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    cluster_id = e["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert "healthcheck" in kafka


def _internal_bootstrap() -> str:
    e = env("kafka")
    advertised = _listeners(e["KAFKA_ADVERTISED_LISTENERS"])
    return advertised[e["KAFKA_INTER_BROKER_LISTENER_NAME"]]


def test_topic_init_creates_the_topics_of_streams_topics() -> None:
    topics = SERVICES["topics"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    script = interpolate("\n".join(topics["command"]))
    partitions_var = env("topics")["PARTITIONS"]
    created = {
        m.group(1): (m.group(2), int(m.group(3)))
        for m in re.finditer(r"^\s*create\s+(\S+)\s+(\S+)\s+(\d+)\s*$", script, re.M)
    }
    expected = {t.name: t for t in default_topics()}
    assert set(created) == set(expected)
    for name, (partitions, retention) in created.items():
        assert retention == int(expected[name].configs["retention.ms"]), name
        if expected[name].partitions == 1:
            assert partitions == "1", name
        else:
            assert partitions == '"$PARTITIONS"' and int(partitions_var) >= 2
    assert f"--bootstrap-server {_internal_bootstrap()}" in script
    assert "--if-not-exists" in script


def test_topic_init_script_is_valid_bash(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not found")
    script = tmp_path / "topics.sh"
    script.write_text(interpolate("\n".join(SERVICES["topics"]["command"])), encoding="utf-8")
    done = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


# --- trackwatch services ----------------------------------------------------------------------


def _cli_options(command: str) -> set[str] | None:
    """The options of `trackwatch <command>`, or None while that command does not exist."""
    from streams.cli.app import app

    group = typer.main.get_command(app)
    cmd = group.commands.get(command)  # type: ignore[attr-defined]
    if cmd is None:
        return None
    return {opt for param in cmd.params for opt in getattr(param, "opts", [])}


@pytest.mark.parametrize(
    ("service", "required"),
    [("worker", {"--broker", "--plan"}), ("collector", {"--broker", "--write-keys"})],
)
def test_trackwatch_services_run_the_cli(service: str, required: set[str]) -> None:
    svc = SERVICES[service]
    command = svc["command"]
    assert command[:2] == ["trackwatch", service]
    given = flags(command)
    assert required <= set(given)
    assert given["--broker"] == _internal_bootstrap()
    assert svc["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    # Every file the command names is mounted from a file that exists.
    targets = {target: source for source, target in mounts(service)}
    for flag in required - {"--broker"}:
        assert given[flag] in targets, f"{service}: {given[flag]} is not mounted"
        assert (ROOT / targets[given[flag]]).is_file()
    options = _cli_options(service)
    if options is None:
        pytest.skip(f"`trackwatch {service}` is not registered yet (streams/cli/service.py)")
    assert set(given) <= options, f"unknown flags for trackwatch {service}"


def test_environment_variables_are_settings_the_cli_reads() -> None:
    """The collector reads TRACKWATCH_* settings; the worker takes flags only."""
    fields = {ENV_PREFIX + name.upper() for name in Settings.__dataclass_fields__}
    names = {k for k in env("collector") if k.startswith(ENV_PREFIX)}
    assert names and names <= fields, names - fields
    assert not any(k.startswith(ENV_PREFIX) for k in env("worker"))
    settings = Settings.from_env(env("collector"))
    assert settings.host == "0.0.0.0"  # reachable from other containers
    assert f"{settings.port}:{settings.port}" in SERVICES["collector"]["ports"][0]


def test_the_default_write_keys_file_loads() -> None:
    source = dict((t, s) for s, t in mounts("collector"))["/config/write_keys.yaml"]
    assert load_write_keys(ROOT / source)


def test_two_workers_expose_what_prometheus_scrapes() -> None:
    worker = SERVICES["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert "ports" not in worker  # replicas would fight over host ports
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    dns = jobs["trackwatch-worker"]["dns_sd_configs"][0]
    given = flags(worker["command"])
    assert dns["names"] == ["worker"] and str(dns["port"]) == given["--metrics-port"]
    assert set(worker["expose"]) == {given["--metrics-port"], given["--web-port"]}
    assert given["--host"] == "0.0.0.0"  # the worker listens on loopback unless told otherwise
    target = jobs["trackwatch-collector"]["static_configs"][0]["targets"][0]
    host, port = target.split(":")
    assert host == "collector" and port == env("collector")["TRACKWATCH_PORT"]


# --- Prometheus and Grafana -------------------------------------------------------------------


def test_prometheus_gets_its_config_and_rules() -> None:
    prom = SERVICES["prometheus"]
    targets = dict((t, s) for s, t in mounts("prometheus"))
    config = next(a.split("=", 1)[1] for a in prom["command"] if a.startswith("--config.file="))
    assert targets[config] == "./deploy/prometheus/prometheus.yml"
    for rule_file in PROMETHEUS["rule_files"]:
        in_container = str(Path(config).parent / rule_file)
        assert in_container in targets
        assert (ROOT / targets[in_container]).is_file()


def test_grafana_gets_the_generated_provisioning() -> None:
    targets = dict((t, s) for s, t in mounts("grafana"))
    assert targets["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    assert targets[grafana.DASHBOARDS_DIR_IN_CONTAINER] == "./deploy/grafana/dashboards"
    e = env("grafana")
    assert e[grafana.WEBHOOK_URL_ENV].startswith("http")
    home = e["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    rel = Path(home).relative_to(grafana.DASHBOARDS_DIR_IN_CONTAINER)
    assert (ROOT / "deploy/grafana/dashboards" / rel).is_file()
    assert re.match(r"grafana/grafana(-oss)?:1[01]\.", SERVICES["grafana"]["image"])
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text("utf-8")
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    assert "9090:9090" in SERVICES["prometheus"]["ports"]


# --- image ------------------------------------------------------------------------------------


def test_dockerfile_installs_the_package_on_python_311_slim() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"pip install \.$", text, re.M)
    assert all(SERVICES[s].get("build") == "." for s in ("worker", "collector"))


def test_dockerignore_keeps_what_pip_install_needs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p) for p in patterns
        )

    for needed in (
        "pyproject.toml",
        "setup.py",  # builds the validator's compiled fast path
        "tracking_plan/_fastcheck.pyx",
        "README.md",
        "streams/cli/app.py",
        "tracking_plan/model.py",
        "detectors/base.py",
        "examples/ecommerce.yaml",
    ):
        assert not ignored(needed), needed
    for heavy in (".venv", ".git", "tests", "bench", "tracking_plan/_fastcheck.c"):
        assert ignored(heavy), heavy
