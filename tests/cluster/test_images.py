"""The container files, checked statically (no Docker engine runs here): the Dockerfile's
instructions, the compose services, and the KubeRay RayJob, against the versions pinned in
pyproject.toml and poke_tune/sim/runtime.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from poke_tune.sim.runtime import MIN_NODE_MAJOR, SHOWDOWN_VERSION

DOCKER = Path(__file__).parents[2] / "docker"
ROOT = DOCKER.parent


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    pairs = []
    for line in joined:
        keyword, _, rest = line.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def _args(pairs: list[tuple[str, str]]) -> dict[str, str]:
    return dict(rest.split("=", 1) for keyword, rest in pairs if keyword == "ARG" and "=" in rest)


def _pinned_ray() -> tuple[str, str]:
    """(major.minor, python tag) from pyproject: `ray[...]>=2.60,<2.61`, and the Python
    version mypy checks (3.11). Read with regular expressions: tomllib is not in 3.10."""
    text = (ROOT / "pyproject.toml").read_text()
    ray = re.search(r'"ray\[[^\]]*\]>=\s*(\d+\.\d+)', text)
    python = re.search(r'^python_version\s*=\s*"(\d+)\.(\d+)"', text, re.MULTILINE)
    assert ray and python
    return ray.group(1), f"py{python.group(1)}{python.group(2)}"


def test_dockerfile_instructions_are_known() -> None:
    known = {"ARG", "FROM", "RUN", "ENV", "USER", "WORKDIR", "COPY", "LABEL", "CMD"}
    for keyword, _ in _instructions(DOCKER / "Dockerfile"):
        assert keyword in known, keyword


def test_base_image_is_ray_for_the_pinned_versions_with_a_pinned_cuda() -> None:
    pairs = _instructions(DOCKER / "Dockerfile")
    assert pairs[0][0] in ("ARG", "FROM")
    image = _args(pairs)["RAY_IMAGE"]
    ray_minor, python = _pinned_ray()
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+)\.\d+-(py\d+)-(cu\d{3})", image)
    assert match, f"{image}: expected rayproject/ray:X.Y.Z-pyNNN-cuNNN (not -gpu)"
    assert match.group(1) == ray_minor and match.group(2) == python
    assert ("FROM", "${RAY_IMAGE}") in pairs
    # torch is installed explicitly, for the same CUDA as the base image
    args = _args(pairs)
    assert args["TORCH_INDEX"].endswith(f"/whl/{match.group(3)}")
    runs = " ".join(rest for keyword, rest in pairs if keyword == "RUN")
    assert '"torch==${TORCH_VERSION}"' in runs


def test_image_has_node_and_the_pinned_simulator_where_poke_tune_looks() -> None:
    pairs = _instructions(DOCKER / "Dockerfile")
    args = _args(pairs)
    assert int(args["NODE_MAJOR"]) >= MIN_NODE_MAJOR
    assert args["SHOWDOWN_VERSION"] == SHOWDOWN_VERSION
    env = " ".join(rest for keyword, rest in pairs if keyword == "ENV")
    match = re.search(r"POKE_TUNE_SHOWDOWN_DIR=(\S+)", env)
    assert match and match.group(1).endswith("node_modules/pokemon-showdown")
    prefix = match.group(1).removesuffix("/node_modules/pokemon-showdown")
    runs = [rest for keyword, rest in pairs if keyword == "RUN"]
    install = next(r for r in runs if "npm install" in r)
    words = shlex.split(install)
    assert words[words.index("--prefix") + 1] == prefix
    assert "pokemon-showdown@${SHOWDOWN_VERSION}" in words
    assert any("nodejs" in r and "node_${NODE_MAJOR}.x" in r for r in runs)


def test_image_installs_poke_tune_with_the_pinned_ray() -> None:
    pairs = _instructions(DOCKER / "Dockerfile")
    ray_minor, _ = _pinned_ray()
    copied = [rest.split()[-2] for keyword, rest in pairs if keyword == "COPY"]
    assert "poke_tune" in copied and "search_spaces" in copied
    runs = " ".join(rest for keyword, rest in pairs if keyword == "RUN")
    assert re.search(rf'"ray\[default,tune\]=={re.escape(ray_minor)}\.\d+" \.', runs)
    assert "poke-tune --help" in runs


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _published(service: dict[str, Any]) -> list[str]:
    return [str(p) for p in service.get("ports", [])]


def test_compose_has_the_cluster_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"ray-head", "ray-worker", "mlflow", "postgres", "minio", "minio-init"} <= set(services)
    for service in services.values():
        for port in _published(service):  # nothing is published beyond this host
            assert port.startswith("127.0.0.1:"), port


def test_compose_ray_nodes_share_image_auth_and_storage(compose: dict[str, Any]) -> None:
    head, worker = compose["services"]["ray-head"], compose["services"]["ray-worker"]
    assert head["image"] == worker["image"]
    assert head["build"]["dockerfile"] == "docker/Dockerfile"
    assert "--head" in head["command"] and "--dashboard-port=8265" in head["command"]
    assert "127.0.0.1:8265:8265" in _published(head)
    assert "--address=ray-head:6379" in worker["command"]
    for node in (head, worker):
        env = node["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN" in env
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert env["POKE_TUNE_CACHE"].startswith("/shared/")
        assert "tune-storage:/shared" in node["volumes"]
    assert "tune-storage" in compose["volumes"]


def test_compose_worker_reserves_a_gpu(compose: dict[str, Any]) -> None:
    devices = compose["services"]["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]


def test_compose_mlflow_uses_postgres_minio_and_allows_its_service_name(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    mlflow = services["mlflow"]
    command = mlflow["command"]
    assert "--backend-store-uri postgresql://" in command and "@postgres:5432/" in command
    assert "--artifacts-destination s3://mlflow/" in command and "--serve-artifacts" in command
    allowed = re.search(r"--allowed-hosts (\S+)", command)
    assert allowed and "mlflow:5000" in allowed.group(1).split(",")
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "127.0.0.1:5000:5000" in _published(mlflow)
    assert mlflow["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing local/mlflow" in services["minio-init"]["entrypoint"]
    server = (DOCKER / mlflow["build"]["dockerfile"]).read_text()
    assert "ghcr.io/mlflow/mlflow:v3.17" in server and "psycopg2" in server


@pytest.fixture(scope="module")
def rayjob() -> dict[str, Any]:
    documents = list(yaml.safe_load_all((DOCKER / "kuberay" / "rayjob.yaml").read_text()))
    return next(d for d in documents if d["kind"] == "RayJob")


def test_rayjob_runs_a_checked_in_spec_on_head_and_gpu_workers(rayjob: dict[str, Any]) -> None:
    assert rayjob["apiVersion"] == "ray.io/v1"
    spec = rayjob["spec"]
    words = shlex.split(spec["entrypoint"])
    assert words[:2] == ["poke-tune", "run"]
    checked_in = ROOT / "search_spaces" / Path(words[2]).name
    assert checked_in.is_file() and words[2].endswith(f"search_spaces/{checked_in.name}")
    assert any(w.startswith("storage_path=s3://") for w in words)
    cluster = spec["rayClusterSpec"]
    ray_minor, _ = _pinned_ray()
    assert cluster["rayVersion"].startswith(f"{ray_minor}.")
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    (group,) = cluster["workerGroupSpecs"]
    worker = group["template"]["spec"]["containers"][0]
    assert head["image"] == worker["image"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {p["containerPort"] for p in head["ports"]} >= {6379, 8265}
    env = {e["name"] for e in worker["env"]}
    assert "POKE_TUNE_CACHE" in env
