"""Container instance health, which moto 5.2.5 does not model at all.

ECS runs its own checks on every container instance (agent 1.57.0 and later) and reports them
in DescribeContainerInstances only when asked, with `include=["CONTAINER_INSTANCE_HEALTH"]`:
`healthStatus = {overallStatus, details: [{type, status, statusReason, lastUpdated,
lastStatusChange}]}` (botocore shapes ContainerInstanceHealthStatus and InstanceHealthCheckResult).
The overall status is the most severe of the details', IMPAIRED first, then INSUFFICIENT_DATA,
INITIALIZING and OK. A healthy instance reports OK with one CONTAINER_RUNTIME check that is OK,
which is what every instance reports here until a test says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from moto.core.utils import utcnow

#: botocore's InstanceHealthCheckState, most severe first.
STATES = ("IMPAIRED", "INSUFFICIENT_DATA", "INITIALIZING", "OK")
#: botocore's InstanceHealthCheckType.
CHECK_TYPES = ("CONTAINER_RUNTIME", "ACCELERATED_COMPUTE", "DAEMON", "AGENT_CONNECTIVITY")
#: The check a healthy instance reports.
DEFAULT_CHECK = "CONTAINER_RUNTIME"
#: The DescribeContainerInstances `include` value that asks for it.
INCLUDE = "CONTAINER_INSTANCE_HEALTH"

# Kept on moto's ContainerInstance object, so a reset (which rebuilds the backend) forgets it.
_SLOT = "_harness_health"


@dataclass
class Health:
    """One instance's health as ECS would judge it: the overall status and the one check that
    decides it."""

    overall: str
    check: str
    reason: str | None
    changed_at: datetime

    def as_ecs(self, now: datetime) -> dict[str, Any]:
        """The `healthStatus` object; the check looks as if ECS had just run it."""
        detail: dict[str, Any] = {
            "type": self.check,
            "status": self.overall,
            "lastUpdated": now,
            "lastStatusChange": self.changed_at,
        }
        if self.reason:
            detail["statusReason"] = self.reason
        return {"overallStatus": self.overall, "details": [detail]}


def current(instance: Any) -> Health:
    """The instance's health: what a test last set, else OK since it registered."""
    health = getattr(instance, _SLOT, None)
    if health is None:
        health = Health("OK", DEFAULT_CHECK, None, instance.registered_at)
    return health


def set_health(instance: Any, overall: str, check: str, reason: str | None) -> Health:
    """Replace the instance's health; `lastStatusChange` moves only when the status does."""
    if overall not in STATES:
        raise ValueError(f"overall must be one of {list(STATES)}")
    if check not in CHECK_TYPES:
        raise ValueError(f"type must be one of {list(CHECK_TYPES)}")
    old = current(instance)
    changed_at = old.changed_at if (old.overall, old.check) == (overall, check) else utcnow()
    health = Health(overall, check, reason, changed_at)
    setattr(instance, _SLOT, health)
    return health


def health_status(instance: Any) -> dict[str, Any]:
    """`ContainerInstance.healthStatus` as moto's serializer reads it (an attribute of the model)."""
    return current(instance).as_ecs(utcnow())
