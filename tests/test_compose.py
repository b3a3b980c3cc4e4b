"""docker-compose.yml, parsed (no Docker engine runs in CI): the deployment an operator gets."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_services_and_their_commands() -> None:
    services = _compose()["services"]
    assert set(services) >= {"redis", "bot", "worker"}
    assert services["bot"]["command"] == ["facechain-bot", "bot"]
    assert services["worker"]["command"] == ["facechain-bot", "worker"]


def test_every_long_running_service_has_a_healthcheck_and_restarts() -> None:
    for name, service in _compose()["services"].items():
        if service.get("restart") == "no":  # a one-shot step
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", name


def test_bot_and_worker_wait_for_a_healthy_redis_and_reach_it_by_service_name() -> None:
    services = _compose()["services"]
    for name in ("bot", "worker"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        # .env may override it (a password, docs/scaling.md); otherwise the compose file's own Redis.
        assert services[name]["environment"]["FACECHAIN_REDIS_URL"] == "${FACECHAIN_REDIS_URL:-redis://redis:6379/0}"


def test_the_worker_reserves_a_gpu() -> None:
    devices = _compose()["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_data_survives_restarts_and_bot_and_worker_share_the_blob_store() -> None:
    compose = _compose()
    services = compose["services"]
    assert "data:/data" in services["bot"]["volumes"]
    assert "data:/data" in services["worker"]["volumes"]
    assert services["bot"]["environment"]["FACECHAIN_DATA_DIR"] == "/data"
    assert any(v.startswith("models:") for v in services["worker"]["volumes"])
    assert "redis-data:/data" in services["redis"]["volumes"]
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes", "Redis keeps an append-only file"
    assert set(compose["volumes"]) >= {"data", "models", "redis-data", "compile-cache", "styles"}


def test_dockerfiles_exist_and_the_bot_image_has_no_torch() -> None:
    services = _compose()["services"]
    for name in ("bot", "worker"):
        assert (ROOT / services[name]["build"]["dockerfile"]).is_file()
    bot_dockerfile = (ROOT / services["bot"]["build"]["dockerfile"]).read_text()
    assert "gpu" not in bot_dockerfile and "torch" not in bot_dockerfile.lower()


def test_the_worker_image_ships_bytecode_for_everything_it_installs() -> None:
    # Its user cannot write .pyc files at run time: without them every restart compiles torch's
    # Python again (imports 11-15 s instead of 6 s on an H200).
    lines = [line for line in (ROOT / "Dockerfile.worker").read_text().splitlines() if line.startswith("RUN ")]
    last_install = max(i for i, line in enumerate(lines) if "pip install" in line)
    compile_steps = [i for i, line in enumerate(lines) if "compileall" in line and "purelib" in line]
    assert compile_steps and compile_steps[-1] > last_install


# ------------------------------------------------------------------------------------ what operators need
#: Compose features newer than the minimum the README states (v2.17), as they would appear in the file.
NEWER_THAN_MINIMUM = {
    "include:": "2.20",
    "develop:": "2.22",
    "start_interval:": "2.20 (and Docker Engine 25)",
    "required:": "2.20 (depends_on) / 2.24 (env_file)",
    "path:": "2.24 (env_file entries as mappings)",
    "!reset": "2.24",
    "!override": "2.24",
}


def test_compose_uses_nothing_newer_than_the_minimum_the_readme_states() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = {feature: version for feature, version in NEWER_THAN_MINIMUM.items() if feature in text}
    assert not used, f"needs a newer Compose than v2.17: {used}"
    assert "Docker Compose v2.17 or later" in (ROOT / "README.md").read_text()
    assert "v2.17 or later" in text


def test_the_webhook_port_is_published_where_the_bot_listens() -> None:
    from bot.config import BotSettings

    bot = _compose()["services"]["bot"]
    listen = bot["environment"]["FACECHAIN_TELEGRAM_WEBHOOK_LISTEN"]
    container_port = listen.rsplit(":", 1)[1]
    assert any(str(p).endswith(f":{container_port}") for p in bot["ports"]), bot["ports"]
    assert BotSettings(_env_file=None).telegram_webhook_listen.endswith(f":{container_port}"), "same as the default"
    readme = (ROOT / "README.md").read_text()
    assert "WEBHOOK_PUBLISH" in readme


def test_admins_style_files_live_on_a_volume_both_processes_read() -> None:
    services = _compose()["services"]
    for name in ("bot", "worker"):
        styles_dir = services[name]["environment"]["FACECHAIN_STYLES_DIR"]
        assert any(v.split(":")[:2] == ["styles", styles_dir] for v in services[name]["volumes"]), name
    for dockerfile in ("Dockerfile", "Dockerfile.worker"):
        assert "/styles" in (ROOT / dockerfile).read_text(), f"{dockerfile} makes /styles for its user"


def test_models_are_fetched_on_the_first_start_before_the_worker_runs() -> None:
    services = _compose()["services"]
    worker = services["worker"]
    fetchers = [
        name
        for name, service in services.items()
        if "facechain-bot models fetch" in " ".join(service.get("command", [])) and service.get("restart") == "no"
    ]
    assert len(fetchers) == 1, fetchers
    fetcher = services[fetchers[0]]
    models_dir = worker["environment"]["FACECHAIN_MODELS_DIR"]
    assert fetcher["environment"]["FACECHAIN_MODELS_DIR"] == models_dir
    assert f"models:{models_dir}" in fetcher["volumes"] and f"models:{models_dir}" in worker["volumes"]
    assert worker["depends_on"][fetchers[0]]["condition"] == "service_completed_successfully"
    assert "facechain-bot models list ||" in " ".join(fetcher["command"]), "only when the models are missing"


# ----------------------------------------------------------------------------- one tested set of versions
def _constraints() -> tuple[dict[str, str], str]:
    """constraints.txt as {normalized name: version}, and the Python version it was made on."""
    from packaging.utils import canonicalize_name

    text = (ROOT / "constraints.txt").read_text()
    python = re.search(r"on Python (\d+\.\d+)", text)
    assert python, "the header names the Python version"
    pins = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.strip().split("==")
            pins[canonicalize_name(name)] = version
    return pins, python.group(1)


#: The worker image's `stages-pipelines` extra, not installed where the tests run (it needs the CUDA
#: torch's own torchvision): pip resolves them in the image, torchvision pinned by torch's version.
RESOLVED_IN_THE_IMAGE = {"timm", "torchvision"}


def _requirements() -> list[Any]:
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        texts += extra
    return [r for r in map(Requirement, texts) if canonicalize_name(r.name) != canonicalize_name(project["name"])]


def test_the_constraints_pin_every_dependency_within_pyprojects_ranges() -> None:
    from packaging.utils import canonicalize_name

    pins, _ = _constraints()
    for requirement in _requirements():
        name = canonicalize_name(requirement.name)
        if name in RESOLVED_IN_THE_IMAGE:
            continue
        assert name in pins, f"{requirement.name} has no pin: run scripts/constraints after the tests pass"
        assert requirement.specifier.contains(pins[name], prereleases=True), (str(requirement), pins[name])


def test_the_constraints_are_the_versions_installed_here() -> None:
    from importlib.metadata import PackageNotFoundError, version

    from packaging.utils import canonicalize_name
    from packaging.version import Version

    pins, python = _constraints()
    assert python == f"{sys.version_info.major}.{sys.version_info.minor}"
    for requirement in _requirements():
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if canonicalize_name(requirement.name) in RESOLVED_IN_THE_IMAGE:
            continue
        try:
            installed = Version(version(requirement.name))
        except PackageNotFoundError:
            continue
        pinned = Version(pins[canonicalize_name(requirement.name)])
        assert installed.public == pinned.public, f"{requirement.name}: {installed} here, {pinned} pinned"


def _dockerfile(name: str) -> tuple[str, list[str]]:
    lines = (ROOT / name).read_text().replace("\\\n", " ").splitlines()
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert len(bases) == 1
    return bases[0], [line for line in lines if "pip install" in line]


@pytest.mark.parametrize(
    ("dockerfile", "extras"), [("Dockerfile", "telegram,discord"), ("Dockerfile.worker", "gpu,faces,stages-pipelines")]
)
def test_both_images_install_the_tested_set_on_its_python(dockerfile: str, extras: str) -> None:
    pins, python = _constraints()
    base, installs = _dockerfile(dockerfile)
    assert base == f"python:{python}-slim", "a plain Python of the tested version: no torch of its own"
    assert "COPY" in (ROOT / dockerfile).read_text() and "constraints.txt" in (ROOT / dockerfile).read_text()
    assert installs and all("-c constraints.txt" in line for line in installs), installs
    assert any(f'".[{extras}]"' in line for line in installs)
    if "gpu" in extras:
        # torch comes from the constraints (PyPI's Linux wheel of that release is the CUDA build).
        assert pins["torch"] and not any("torch" in line for line in installs)


def test_scripts_and_readme_install_with_the_constraints_and_the_cpu_index() -> None:
    script = (ROOT / "scripts" / "test").read_text()
    assert "-c constraints.txt" in script and "download.pytorch.org/whl/cpu" in script
    readme = (ROOT / "README.md").read_text()
    torch = _constraints()[0]["torch"]
    assert f"pip install -c constraints.txt torch=={torch} --index-url https://download.pytorch.org/whl/cpu" in readme
    assert "pip install -c constraints.txt '.[telegram,discord,gpu,faces,stages]'" in readme
