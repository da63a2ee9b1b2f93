"""The proto gate of `make lint`: buf lint (protos/buf.yaml) and protos/buf-breaking.sh, which picks the
commit the protos "last landed" in, run on small git repositories of their own (offline, no stack)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUF_YAML = REPO / "protos" / "buf.yaml"
BREAKING_SCRIPT = REPO / "protos" / "buf-breaking.sh"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}
JOBS_PROTO = """syntax = "proto3";

package modelforge.v1;

// A job.
message Job {
  string job_id = 1;
  int32 steps = 2;
}
"""


@pytest.fixture(scope="module")
def buf() -> str:
    binary = Path(sys.executable).parent / "buf"
    found = str(binary) if binary.is_file() else shutil.which("buf")
    if found is None:
        pytest.fail("no buf: run `make install` (the dev dependency group brings buf-bin)")
    return found


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, **GIT_ENV, **env}
    )


def git(cwd: Path, *args: str) -> str:
    done = run(["git", *args], cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def write_protos(repo: Path, jobs_proto: str) -> None:
    folder = repo / "protos" / "modelforge" / "v1"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(BUF_YAML, repo / "protos" / "buf.yaml")
    (folder / "jobs.proto").write_text(jobs_proto)


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def breaking(repo: Path, buf: str) -> subprocess.CompletedProcess[str]:
    return run(["bash", str(BREAKING_SCRIPT)], repo, BUF=buf)


@pytest.fixture
def landed(tmp_path: Path) -> Path:
    """A repository whose main holds jobs.proto, committed twice (so HEAD has a parent)."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("x\n")
    commit_all(repo, "start")
    write_protos(repo, JOBS_PROTO)
    commit_all(repo, "jobs.proto")
    return repo


def test_the_protos_pass_buf_lint(buf: str) -> None:
    done = run([buf, "lint", "protos"], REPO)
    assert done.returncode == 0, done.stdout + done.stderr


def test_buf_lint_fails_on_a_proto_that_breaks_the_standard_rules(buf: str, tmp_path: Path) -> None:
    bad = """syntax = "proto3";

package modelforge.v1;

enum Colour {
  RED = 0;
}

message thing {
  string jobId = 1;
}

service Things {
  rpc Get(thing) returns (thing);
}
"""
    write_protos(tmp_path, bad)
    done = run([buf, "lint", "protos", "--error-format=json"], tmp_path)
    assert done.returncode != 0
    found = {(f["type"], f["path"], f["start_line"]) for f in map(json.loads, done.stdout.splitlines())}
    path = "protos/modelforge/v1/jobs.proto"
    assert {
        ("ENUM_ZERO_VALUE_SUFFIX", path, 6),
        ("MESSAGE_PASCAL_CASE", path, 9),
        ("FIELD_LOWER_SNAKE_CASE", path, 10),
        ("SERVICE_SUFFIX", path, 13),
        ("RPC_REQUEST_STANDARD_NAME", path, 14),
    } <= found, found


def test_an_uncommitted_renumbering_fails_in_a_checkout_without_a_remote(buf: str, landed: Path) -> None:
    write_protos(landed, JOBS_PROTO.replace("int32 steps = 2;", "int32 steps = 3;"))
    done = breaking(landed, buf)
    assert done.returncode != 0
    assert f".git#ref={git(landed, 'rev-parse', 'HEAD')}," in done.stdout  # the edits against HEAD
    assert 'Previously present field "2" with name "steps" on message "Job" was deleted.' in done.stdout


def test_an_added_field_passes(buf: str, landed: Path) -> None:
    write_protos(landed, JOBS_PROTO.replace("int32 steps = 2;", "int32 steps = 2;\n  string note = 3;"))
    done = breaking(landed, buf)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_clone_of_main_checks_the_commit_that_landed_against_its_parent(
    buf: str, landed: Path, tmp_path: Path
) -> None:
    # CI's situation: the change is committed and the clone's HEAD is origin/main.
    write_protos(landed, JOBS_PROTO.replace("string job_id = 1;", "int64 job_id = 1;"))
    commit_all(landed, "retype job_id")
    clone = tmp_path / "ci"
    git(tmp_path, "clone", "-q", str(landed), str(clone))
    done = breaking(clone, buf)
    assert done.returncode != 0
    assert f".git#ref={git(clone, 'rev-parse', 'HEAD^1')}," in done.stdout
    assert 'changed type from "string" to "int64"' in done.stdout


def test_a_branch_is_checked_from_where_it_left_main(buf: str, landed: Path, tmp_path: Path) -> None:
    clone = tmp_path / "dev"
    git(tmp_path, "clone", "-q", str(landed), str(clone))
    # main gains a field after the branch left it: the branch has not deleted it.
    write_protos(landed, JOBS_PROTO.replace("int32 steps = 2;", "int32 steps = 2;\n  string note = 3;"))
    commit_all(landed, "note")
    git(clone, "fetch", "-q", "origin")
    git(clone, "checkout", "-q", "-b", "feature")
    (clone / "docs.txt").write_text("unrelated\n")
    commit_all(clone, "unrelated")
    left_at = git(clone, "merge-base", "HEAD", "origin/main")
    done = breaking(clone, buf)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f".git#ref={left_at}," in done.stdout
    # ...and its own committed deletion fails.
    write_protos(clone, JOBS_PROTO.replace("  int32 steps = 2;\n", "  reserved 3;\n"))
    commit_all(clone, "drop steps")
    done = breaking(clone, buf)
    assert done.returncode != 0
    assert 'Previously present field "2" with name "steps" on message "Job" was deleted.' in done.stdout


def test_a_shallow_clone_says_it_lacks_the_parent_until_deepened(buf: str, landed: Path, tmp_path: Path) -> None:
    write_protos(landed, JOBS_PROTO.replace("string job_id = 1;", "int64 job_id = 1;"))
    commit_all(landed, "retype job_id")
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{landed}", str(clone))
    done = breaking(clone, buf)
    assert done.returncode == 0 and "HEAD has no parent here" in done.stderr
    git(clone, "fetch", "-q", "--deepen=1")  # what .ci/run does in a shallow clone
    done = breaking(clone, buf)
    assert done.returncode != 0
    assert 'changed type from "string" to "int64"' in done.stdout
