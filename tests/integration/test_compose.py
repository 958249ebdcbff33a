"""The demo stack's docker-compose.yml: valid, every image pinned, wired as the README says.

No Docker engine is needed: ``docker-compose config`` validates and normalises
the file (anchors merged, variables interpolated, paths resolved) and the
checks run on its output. Both the output of Compose v1 (Debian's
``docker-compose``) and of v2 (short or long syntax) are understood.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from events.registry import stream_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
KAFKA_INTERNAL = "kafka:9092"
LAKE_VOLUME = "lake"
LAKE_URI = "s3://streambatch/lake"
FIRST_METRICS_HOST_PORT = 9101
INSTALL_HINT = (
    "docker-compose is not installed; install it with "
    "`apt-get update && apt-get install -y docker-compose` (Debian's package), "
    "or put Compose v2's `docker-compose` on PATH"
)


def run_compose(*args: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f docker-compose.yml ARGS`` from the repository root."""
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.fail(INSTALL_HINT)
    return subprocess.run(
        [executable, "--file", str(COMPOSE_FILE), "--project-directory", str(ROOT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The whole file as Compose resolves it."""
    result = run_compose("config")
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    document = yaml.safe_load(result.stdout)
    assert isinstance(document, dict) and document.get("services"), result.stdout
    return document


@pytest.fixture(scope="module")
def services(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services as Compose resolves them."""
    return dict(resolved["services"])


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings, from the mapping or the ``KEY=VALUE`` list form."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.partition("=") for item in raw)
        return {key: value for key, _, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def command(service: dict[str, Any]) -> list[str]:
    """A service's command as a list of words."""
    raw = service.get("command") or []
    return shlex.split(raw) if isinstance(raw, str) else [str(word) for word in raw]


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """``(source, target, read_only)`` of each mount, from the short or the long syntax."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append(
                (str(volume.get("source")), str(volume["target"]), bool(volume.get("read_only")))
            )
            continue
        source, _, rest = str(volume).partition(":")
        target, _, mode = rest.partition(":")
        mounts.append((source, target, "ro" in mode.split(",")))
    return mounts


def published_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """``(host_ip, host_port, container_port)`` of each published port."""
    ports = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            host_ip = str(port.get("host_ip") or "")
            ports.append((host_ip, int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        ports.append((host_ip, int(parts[-2]), int(parts[-1])))
    return ports


def dependencies(service: dict[str, Any]) -> dict[str, str]:
    """``{service: condition}`` of ``depends_on`` (a bare list means ``service_started``)."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {
        name: str((spec or {}).get("condition", "service_started")) for name, spec in raw.items()
    }


def image_tag(reference: str) -> str | None:
    """The tag of ``[registry[:port]/]name[:tag][@digest]``, ``None`` when there is none."""
    name = reference.split("@", 1)[0]
    last_part = name.rsplit("/", 1)[-1]
    return last_part.split(":", 1)[1] if ":" in last_part else None


def flow_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{stream: service}`` of the services running ``python -m bytewax.run flows.<stream>``."""
    flows = {}
    for service in services.values():
        words = command(service)
        if words[:3] == ["python", "-m", "bytewax.run"] and len(words) > 3:
            flows[words[3].removeprefix("flows.")] = service
    return flows


def test_compose_file_is_valid() -> None:
    result = run_compose("config", "-q")
    assert result.returncode == 0, f"docker-compose config -q failed:\n{result.stderr}"


def test_every_image_is_pinned_to_an_exact_tag(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        reference = service.get("image")
        assert reference, f"{name}: no image (a built service is tagged with `image:` too)"
        tag = image_tag(str(reference))
        assert tag is not None, f"{name}: {reference} has no tag"
        assert tag != "latest", f"{name}: {reference} is not pinned"
        # MinIO's images are tagged by release time (RELEASE.2024-12-18T13-15-44Z).
        exact = re.match(r"v?\d+\.\d+", tag) or re.fullmatch(r"RELEASE\.[\dT-]+Z", tag)
        assert exact, f"{name}: {reference} is a floating tag"


def test_project_image_has_a_pinned_python_base_and_runs_unprivileged() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    bases = [line.split()[1] for line in lines if line.upper().startswith("FROM ")]
    assert bases, "Dockerfile has no FROM"
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"


def test_kafka_is_apache_kafka_3_9_in_kraft_mode_with_a_health_check(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:3\.9\.\d+", kafka["image"]), kafka["image"]
    settings = environment(kafka)
    assert settings["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert f"PLAINTEXT://{KAFKA_INTERNAL}" in settings["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert settings["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])


def test_topics_are_created_once_kafka_is_healthy(services: dict[str, dict[str, Any]]) -> None:
    topics = services["topics"]
    assert topics["image"] == services["kafka"]["image"]
    assert dependencies(topics) == {"kafka": "service_healthy"}
    settings = environment(topics)
    assert settings["TOPIC_PARTITIONS"] == "3"
    assert settings["TOPIC_STREAMS"].split() == list(stream_names())
    script = (ROOT / "docker" / "create-topics.sh").read_text()
    assert "--create --if-not-exists" in script
    assert '"$stream.dlq"' in script
    assert '"$stream.batches"' in script


def test_the_three_flows_run_with_restart_lake_volume_and_metrics(
    services: dict[str, dict[str, Any]],
) -> None:
    flows = flow_services(services)
    assert sorted(flows) == sorted(stream_names())
    host_ports: list[int] = []
    for stream, service in flows.items():
        assert service["restart"] == "unless-stopped", stream
        assert volume_mounts(service) == [], "no disk shared: the lake is the bucket"
        settings = environment(service)
        assert settings["STREAMBATCH_LAKE_URI"] == LAKE_URI, stream
        assert settings["AWS_ENDPOINT_URL"] == "http://minio:9000", stream
        metrics_port = int(settings["STREAMBATCH_METRICS_PORT"])
        ports = published_ports(service)
        assert [container for _, _, container in ports] == [metrics_port], stream
        host_ports.extend(host for _, host, _ in ports)
        assert dependencies(service) == {
            "kafka": "service_healthy",
            "topics": "service_completed_successfully",
            "lake-bucket": "service_completed_successfully",
        }, stream
    first = FIRST_METRICS_HOST_PORT
    assert sorted(host_ports) == list(range(first, first + len(flows)))


def test_every_published_metrics_endpoint_listens_on_all_container_interfaces(
    services: dict[str, dict[str, Any]],
) -> None:
    # The default is loopback only, which a published port cannot reach.
    serving = {
        name: environment(service)
        for name, service in services.items()
        if "STREAMBATCH_METRICS_PORT" in environment(service)
    }
    assert len(serving) == len(stream_names()) + 2  # the flows, the router, the workers
    for name, settings in serving.items():
        assert settings.get("STREAMBATCH_METRICS_HOST") == "0.0.0.0", name


def test_lake_is_a_minio_bucket_created_once_and_read_by_the_report(
    resolved: dict[str, Any],
) -> None:
    services = resolved["services"]
    minio = services["minio"]
    assert minio["image"].startswith("minio/minio:RELEASE.")
    assert volume_mounts(minio) == [(LAKE_VOLUME, "/data", False)]
    assert LAKE_VOLUME in resolved["volumes"]
    assert ("127.0.0.1", 9001, 9001) in published_ports(minio), "the console, on localhost"
    assert "--console-address" in command(minio)
    bucket = services["lake-bucket"]
    assert bucket["image"].startswith("minio/mc:RELEASE.")
    assert dependencies(bucket) == {"minio": "service_healthy"}
    assert "mc mb --ignore-existing lake/streambatch" in " ".join(bucket["entrypoint"])
    report = services["report"]
    assert volume_mounts(report) == []
    assert environment(report)["STREAMBATCH_LAKE_URI"] == LAKE_URI
    assert dependencies(report) == {"lake-bucket": "service_completed_successfully"}
    loop = (ROOT / "docker" / "report-loop.sh").read_text()
    assert "streambatch query --report orders_per_window" in loop


def test_every_lake_user_reaches_minio_with_the_same_credentials(
    services: dict[str, dict[str, Any]],
) -> None:
    minio = environment(services["minio"])
    users = [
        name for name, service in services.items() if "STREAMBATCH_LAKE_URI" in environment(service)
    ]
    assert {"flows-orders", "flows-clicks", "flows-logs", "report", "workers"} <= set(users)
    for name in users:
        settings = environment(services[name])
        assert settings["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"], name
        assert settings["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"], name
        assert settings["AWS_ALLOW_HTTP"] == "true", name


def test_generator_produces_every_stream_after_the_topics_exist(
    services: dict[str, dict[str, Any]],
) -> None:
    generator = services["generator"]
    assert generator["restart"] == "unless-stopped"
    assert dependencies(generator)["topics"] == "service_completed_successfully"
    loop = (ROOT / "docker" / "produce-loop.sh").read_text()
    assert "streambatch produce --stream all" in loop


def test_every_kafka_client_uses_the_internal_listener(
    services: dict[str, dict[str, Any]],
) -> None:
    project_image = services["generator"]["image"]
    clients = 0
    for name, service in services.items():
        settings = environment(service)
        if service["image"] == project_image:
            assert settings.get("KAFKA_BOOTSTRAP_SERVERS") == KAFKA_INTERNAL, name
        for key in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"):
            if key in settings:
                assert settings[key] == KAFKA_INTERNAL, f"{name}: {key}={settings[key]}"
                clients += 1
    assert clients >= len(stream_names()) + 3  # flows, generator, report, topics, kafka-ui


def test_published_ports_listen_on_localhost_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for host_ip, host_port, _ in published_ports(service):
            assert host_ip == "127.0.0.1", f"{name}: port {host_port} is open beyond this host"
    assert ("127.0.0.1", 8080, 8080) in published_ports(services["kafka-ui"])


def test_postgres_is_pinned_and_health_checked(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:\d+\.\d+(-alpine)?", postgres["image"]), postgres["image"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_router_and_workers_run_the_workflow_on_postgres(
    services: dict[str, dict[str, Any]],
) -> None:
    router, workers = services["router"], services["workers"]
    assert command(router) == ["streambatch", "route"]
    assert command(workers) == ["streambatch", "worker", "--all"]
    for service in (router, workers):
        assert service["restart"] == "unless-stopped"
        assert dependencies(service)["kafka"] == "service_healthy"
        assert dependencies(service)["topics"] == "service_completed_successfully"
    assert dependencies(workers)["postgres"] == "service_healthy"
    store = environment(workers)["STREAMBATCH_HANDLER_STORE"]
    assert store.startswith("postgresql://streambatch:") and store.endswith(
        "@postgres:5432/streambatch"
    )
    # The generator sends checkouts only: the workers make the rest of the workflow.
    assert environment(services["generator"])["GENERATOR_CHECKOUTS_ONLY"] == "true"
    loop = (ROOT / "docker" / "produce-loop.sh").read_text()
    assert "--checkouts-only" in loop
    # The batch handlers read the bucket (no volume of the lake) and deliver to the receiver.
    assert not any(mount[0] == LAKE_VOLUME for mount in volume_mounts(workers))
    assert environment(workers)["STREAMBATCH_DELIVERY_URL"] == "http://batch-receiver:8787/batches"
    assert command(services["batch-receiver"])[:3] == ["python", "-m", "handlers.batch.receiver"]
    # The image carries the handlers' configuration where the commands look for it.
    assert "COPY config/handlers.toml config/rules.toml /app/config/" in DOCKERFILE.read_text()


def test_flow_containers_are_healthy_only_while_committing(
    services: dict[str, dict[str, Any]],
) -> None:
    """The health check asks /healthz (503 when stalled), not a page that merely answers."""
    for name in ("flows-orders", "flows-clicks", "flows-logs"):
        check = " ".join(services[name]["healthcheck"]["test"])
        assert "/healthz" in check and "/metrics" not in check, (name, check)
        assert environment(services[name])["STREAMBATCH_METRICS_PORT"] in check, name
