"""Domain exceptions. Each carries the name of the gRPC status it maps to, so domain code
raises them without importing grpc; the server interceptor does the mapping once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field: `field` is a dotted path such as "learning_rate" or "dataset:12.prompt"."""

    field: str
    description: str


class ModelForgeError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str, violations: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.violations = violations or []


class InvalidArgument(ModelForgeError):
    code = "INVALID_ARGUMENT"


class NotFound(ModelForgeError):
    code = "NOT_FOUND"


class AlreadyExists(ModelForgeError):
    code = "ALREADY_EXISTS"


class PermissionDenied(ModelForgeError):
    code = "PERMISSION_DENIED"


class FailedPrecondition(ModelForgeError):
    """The resource is in the wrong state (a job already running, a finished job stopped)."""

    code = "FAILED_PRECONDITION"


class Aborted(ModelForgeError):
    code = "ABORTED"


class ResourceExhausted(ModelForgeError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(ModelForgeError):
    code = "UNAVAILABLE"
