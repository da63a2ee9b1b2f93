# The five service images: one template (deploy/docker/Dockerfile) and each service's build arguments.
# From the repository root (`make images` runs the first, `make images-push` the last):
#   docker buildx bake --load                     every image, as modelforge/<service>:0.1.0
#   docker buildx bake trainer --load             one
#   IMAGE_PREFIX=registry.example.com/modelforge IMAGE_TAG=0.1.0 docker buildx bake --push
# deploy/tests/test_dockerfiles.py checks what these arguments make of the template against the
# Kubernetes manifests (image names and tag, ports, user, no command override) and `make up` (the
# module each service runs).

variable "IMAGE_PREFIX" {
  # deploy/k8s names the images modelforge/<service>; a site overlay retargets them (docs/deploy.md).
  default = "modelforge"
}

variable "IMAGE_TAG" {
  # The tag deploy/k8s/components/images pins.
  default = "0.1.0"
}

# The two bases (STYLE P17). Pin them by digest as well where your registry allows, e.g.
# PYTHON_IMAGE=python:3.11.14-slim-trixie@sha256:...
variable "PYTHON_IMAGE" {
  default = "python:3.11.14-slim-trixie"
}

variable "CUDA_IMAGE" {
  # CUDA 13.0 to match torch 2.11.0 from PyPI (DESIGN.md section 6); the wheels bring the CUDA libraries.
  default = "nvidia/cuda:13.0.2-base-ubuntu24.04"
}

group "default" {
  targets = ["gateway", "trainer", "registry", "hardware", "inference"]
}

target "_template" {
  context    = "."
  dockerfile = "deploy/docker/Dockerfile"
}

# gateway, registry, hardware: the slim Python base and its own interpreter (3.11.14, as the tag says);
# each syncs its distribution (SERVICE_PACKAGE) from the workspace lock, uv.lock.
target "_python" {
  inherits = ["_template"]
  args = {
    BASE_IMAGE           = "${PYTHON_IMAGE}"
    UV_PYTHON_PREFERENCE = "only-system"
    PYTHON_VERSION       = "3.11.14"
  }
}

# trainer, inference: the CUDA base, a standalone CPython from uv, the CUDA stack's lock
# (deploy/docker/cuda/uv.lock: each image syncs its extra, CUDA_EXTRA), and the GPU.
target "_cuda" {
  inherits = ["_template"]
  args = {
    BASE_IMAGE           = "${CUDA_IMAGE}"
    UV_PYTHON_PREFERENCE = "only-managed"
    PYTHON_VERSION       = "3.11.14"
    GPU_CAPABILITIES     = "compute,utility"
  }
}

target "gateway" {
  inherits = ["_python"]
  tags     = ["${IMAGE_PREFIX}/gateway:${IMAGE_TAG}"]
  args = {
    SERVICE         = "gateway"
    SERVICE_MODULE  = "modelforge_gateway"
    SERVICE_PACKAGE = "modelforge-gateway"
    # HTTP; /metrics is served there too.
    PORTS = "8000"
  }
}

target "registry" {
  inherits = ["_python"]
  tags     = ["${IMAGE_PREFIX}/registry:${IMAGE_TAG}"]
  args = {
    SERVICE         = "registry-svc"
    SERVICE_MODULE  = "modelforge_registry"
    SERVICE_PACKAGE = "modelforge-registry"
    # gRPC, and Prometheus /metrics (the gRPC port + 1000, MODELFORGE_METRICS_PORT).
    PORTS = "50052 51052"
  }
}

target "hardware" {
  inherits = ["_python"]
  tags     = ["${IMAGE_PREFIX}/hardware:${IMAGE_TAG}"]
  args = {
    SERVICE         = "hardware-svc"
    SERVICE_MODULE  = "modelforge_hardware"
    SERVICE_PACKAGE = "modelforge-hardware"
    PORTS           = "50053 51053"
    # NVML through the driver libraries the NVIDIA container toolkit injects; no CUDA.
    GPU_CAPABILITIES = "utility"
  }
}

target "trainer" {
  inherits = ["_cuda"]
  tags     = ["${IMAGE_PREFIX}/trainer:${IMAGE_TAG}"]
  args = {
    SERVICE        = "trainer-svc"
    SERVICE_MODULE = "modelforge_trainer"
    PORTS          = "50051 51051"
    # The service, the training runtime it launches (modelforge-training) with its fast provider
    # (unsloth, unsloth_zoo), and DESIGN.md section 6's stack: the lock's `trainer` extra.
    CUDA_EXTRA = "trainer"
    # Triton (unsloth's kernels) compiles a small C launcher for each kernel at run time with the system
    # C compiler (triton/runtime/build.py); without one, triton 3.6.0 on torch 2.11.0+cu130 fails with
    # "Failed to find C compiler" (checked on an H100). So the trainer keeps gcc and the libc headers,
    # nothing more: no make, g++ or build-essential. (Python.h comes with the interpreter.)
    RUNTIME_APT_PACKAGES = "gcc libc6-dev"
  }
}

target "inference" {
  inherits = ["_cuda"]
  tags     = ["${IMAGE_PREFIX}/inference:${IMAGE_TAG}"]
  args = {
    SERVICE        = "inference-svc"
    SERVICE_MODULE = "modelforge_inference"
    PORTS          = "50054 51054"
    CUDA_EXTRA     = "inference"
  }
}
