"""Patches moto 5.2.5's ECS backend toward the documented ECS behaviour the agent relies on.

Each replacement is small and says which documented rule it enforces; README.md lists what
unpatched moto does instead. The patches reach into moto's internals, so the module refuses to
load on any other moto release rather than silently patching the wrong thing.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from typing import Any

import moto

EXPECTED_MOTO_VERSION = "5.2.5"
if moto.__version__ != EXPECTED_MOTO_VERSION:
    raise RuntimeError(
        f"ecs_patches targets moto {EXPECTED_MOTO_VERSION} but moto {moto.__version__} is installed: "
        "pin moto[server]==5.2.5 (tests/moto/requirements.txt) or port the patches"
    )

from moto.core.responses import ActionResult  # noqa: E402
from moto.core.serialize import never_return  # noqa: E402
from moto.ecs.exceptions import ECSException, InvalidParameterException  # noqa: E402
from moto.ecs.models import (  # noqa: E402
    ContainerInstance,
    ContainerInstanceFailure,
    EC2ContainerServiceBackend,
    Task,
)
from moto.ecs.responses import DESCRIBE_TASKS_TAGS, EC2ContainerServiceResponse  # noqa: E402

from drain import DrainScheduler  # noqa: E402
import instance_health as health  # noqa: E402
from paging import paginate  # noqa: E402

log = logging.getLogger("moto-harness.patches")

#: Serialises every request against moto's state: its backend mutates shared dicts in several
#: steps and takes no lock of its own; many agents call at once.
LOCK = threading.RLock()
#: The scheduler's drain behaviour (its delay is a harness setting).
SCHEDULER = DrainScheduler(LOCK)

TARGET_TYPE = "container-instance"
MAX_ATTRIBUTES_PER_CALL = 10
MAX_CUSTOM_ATTRIBUTES = 10
MAX_INSTANCES_PER_STATE_UPDATE = 10
SETTABLE_STATUSES = ("ACTIVE", "DRAINING")
#: The statuses ListContainerInstances filters on (botocore's ContainerInstanceStatus).
LISTABLE_INSTANCE_STATUSES = ("ACTIVE", "DRAINING", "REGISTERING", "DEREGISTERING", "REGISTRATION_FAILED")
TASK_DESIRED_STATUSES = ("RUNNING", "PENDING", "STOPPED")
MAX_TASKS_PER_DESCRIBE = 100

_NAME_RE = re.compile(r"[A-Za-z0-9_\-/\\.]{1,128}")
_VALUE_RE = re.compile(r"[A-Za-z0-9_\-.@/\\: ]{1,128}")
_INSTANCE_ARN_RE = re.compile(
    r"arn:[^:]+:ecs:[^:]*:[^:]*:container-instance/(?:(?P<cluster>[^/]+)/)?(?P<id>[^/]+)"
)


class TargetNotFoundException(ECSException):
    """ECS's answer for an attribute target that is not in the cluster."""

    def __init__(self, target_id: str) -> None:
        super().__init__("TargetNotFoundException", f"Could not find {target_id}.")


class AttributeLimitExceededException(ECSException):
    """ECS's answer when a resource would carry more than 10 custom attributes."""

    def __init__(self) -> None:
        super().__init__(
            "AttributeLimitExceededException",
            "You can apply up to 10 custom attributes for each resource.",
        )


# --- attribute rules ---------------------------------------------------------------------


def _check_batch(attributes: Any) -> list[dict[str, Any]]:
    if not attributes:
        raise InvalidParameterException("attributes can not be empty.")
    if len(attributes) > MAX_ATTRIBUTES_PER_CALL:
        raise InvalidParameterException(
            f"You can specify up to {MAX_ATTRIBUTES_PER_CALL} attributes in a single call."
        )
    return list(attributes)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidParameterException(
            f"Attribute name {name!r} is invalid: 1-128 letters, digits, hyphens, underscores, "
            "forward slashes, back slashes or periods."
        )
    return name


def _check_value(value: Any) -> str | None:
    if value is None:
        return None
    valid = (
        isinstance(value, str)
        and _VALUE_RE.fullmatch(value) is not None
        and not value.startswith(" ")
        and not value.endswith(" ")
    )
    if not valid:
        raise InvalidParameterException(
            f"Attribute value {value!r} is invalid: 1-128 letters, digits, hyphens, underscores, "
            "periods, at signs, slashes, back slashes, colons or spaces, not starting or ending "
            "with a space."
        )
    return value


def _resolve_target(backend: Any, cluster: Any, attr: dict[str, Any]) -> Any:
    """The container instance an attribute names, by full ARN or by id plus targetType."""
    target_id = attr.get("targetId")
    target_type = attr.get("targetType")
    if not target_id:
        raise InvalidParameterException("targetId is required.")
    if target_type is not None and target_type != TARGET_TYPE:
        raise InvalidParameterException(f"targetType must be {TARGET_TYPE}.")
    match = _INSTANCE_ARN_RE.fullmatch(target_id)
    if match is None and target_id.startswith("arn:"):
        raise InvalidParameterException(f"targetId {target_id} is not a container instance ARN.")
    if match is None and target_type is None:
        raise InvalidParameterException("targetType is required when targetId is not a full ARN.")
    if match is not None and match["cluster"] not in (None, cluster.name):
        raise TargetNotFoundException(target_id)
    instance_id = match["id"] if match is not None else target_id
    instance = backend.container_instances.get(cluster.name, {}).get(instance_id)
    if instance is None:
        raise TargetNotFoundException(target_id)
    return instance


def _is_custom(name: str) -> bool:
    return not name.startswith("ecs.")


def _check_custom_limit(writes: list[tuple[Any, str, str | None]]) -> None:
    new_names: dict[int, set[str]] = defaultdict(set)
    instances: dict[int, Any] = {}
    for instance, name, _ in writes:
        instances[id(instance)] = instance
        if _is_custom(name):
            new_names[id(instance)].add(name)
    for key, names in new_names.items():
        existing = {n for n in instances[key].attributes if _is_custom(n)}
        if len(existing | names) > MAX_CUSTOM_ATTRIBUTES:
            raise AttributeLimitExceededException()


# --- backend replacements ----------------------------------------------------------------


def put_attributes(self: Any, cluster_name: str | None, attributes: Any = None) -> None:
    """Validate the whole call first, then write: a rejected call changes nothing."""
    cluster = self._get_cluster(cluster_name or "default")
    writes = []
    for attr in _check_batch(attributes):
        name = _check_name(attr.get("name"))
        value = _check_value(attr.get("value"))
        writes.append((_resolve_target(self, cluster, attr), name, value))
    _check_custom_limit(writes)
    for instance, name, value in writes:
        instance.attributes[name] = value


def delete_attributes(self: Any, cluster_name: str | None, attributes: Any = None) -> None:
    """Delete by name and target whatever the stored value; a missing attribute is no error."""
    cluster = self._get_cluster(cluster_name or "default")
    deletes = [
        (_resolve_target(self, cluster, attr), _check_name(attr.get("name")))
        for attr in _check_batch(attributes)
    ]
    for instance, name in deletes:
        instance.attributes.pop(name, None)


def list_attributes(
    self: Any,
    target_type: str | None,
    cluster_name: str | None = None,
    attr_name: str | None = None,
    attr_value: str | None = None,
    max_results: Any = None,
    next_token: str | None = None,
) -> tuple[list[tuple[str, str, str | None]], str | None]:
    """One page of (targetId, name, value) for one cluster, filtered by name and value."""
    if target_type != TARGET_TYPE:
        raise InvalidParameterException(f"targetType must be {TARGET_TYPE}.")
    cluster = self._get_cluster(cluster_name or "default")
    if attr_value is not None and not attr_name:
        raise InvalidParameterException("attributeValue requires attributeName.")
    rows = [
        (instance.container_instance_arn, name, value)
        for instance in self.container_instances.get(cluster.name, {}).values()
        for name, value in instance.attributes.items()
        if (not attr_name or name == attr_name) and (attr_value is None or value == attr_value)
    ]
    return paginate(rows, lambda row: (row[0], row[1]), "ListAttributes", max_results, next_token)


def update_container_instances_state(
    self: Any, cluster_str: str, instance_refs: Any, status: Any
) -> tuple[list[Any], list[Any]]:
    """Only ACTIVE<->DRAINING (or the same state), at most 10 instances, drain side effects."""
    cluster = self._get_cluster(cluster_str)
    refs = list(instance_refs or [])
    if not refs:
        raise InvalidParameterException("containerInstances can not be empty.")
    if len(refs) > MAX_INSTANCES_PER_STATE_UPDATE:
        raise InvalidParameterException(
            f"containerInstances can have at most {MAX_INSTANCES_PER_STATE_UPDATE} items."
        )
    if status not in SETTABLE_STATUSES:
        raise InvalidParameterException("Container instance status should be one of [ACTIVE, DRAINING]")
    updated, failures = [], []
    for ref in refs:
        instance_id = ref.rsplit("/", 1)[-1]
        instance = self.container_instances.get(cluster.name, {}).get(instance_id)
        if instance is None:
            failures.append(ContainerInstanceFailure("MISSING", instance_id, self.account_id, self.region_name))
            continue
        if instance.status not in SETTABLE_STATUSES:
            failures.append(_status_failure(self, instance, status))
            continue
        old = instance.status
        instance.status = status
        updated.append(instance)
        if old != status:
            SCHEDULER.status_changed(self, cluster.name, instance, old)
    return updated, failures


def _status_failure(backend: Any, instance: Any, wanted: str) -> Any:
    failure = ContainerInstanceFailure("INVALID_STATUS", instance.id, backend.account_id, backend.region_name)
    failure.arn = instance.container_instance_arn
    failure.detail = f"A container instance in status {instance.status} cannot be set to {wanted}."
    return failure


def _frozen_advance(self: Any) -> None:
    """Reads must not move a task along its lifecycle; only StopTask (or the drain) does."""


# --- response replacements ---------------------------------------------------------------


def list_attributes_response(self: Any) -> ActionResult:
    """ListAttributes with the cluster default, pagination and the backend's page."""
    rows, token = self.ecs_backend.list_attributes(
        self._get_param("targetType"),
        self._get_param("cluster"),
        self._get_param("attributeName"),
        self._get_param("attributeValue"),
        self._get_param("maxResults"),
        self._get_param("nextToken"),
    )
    attributes = []
    for target_id, name, value in rows:
        item = {"name": name, "targetId": target_id}
        if value is not None:
            item["value"] = value
        attributes.append(item)
    return ActionResult(_with_token({"attributes": attributes}, token))


def list_tasks_response(self: Any) -> ActionResult:
    """ListTasks defaulting to desiredStatus RUNNING, with exact matches and pagination."""
    cluster = self.ecs_backend._get_cluster(self._get_param("cluster", "default"))
    instance_ref = self._get_param("containerInstance")
    desired = self._get_param("desiredStatus") or "RUNNING"
    if desired not in TASK_DESIRED_STATUSES:
        raise InvalidParameterException("desiredStatus should be one of [RUNNING, PENDING, STOPPED]")
    tasks = self.ecs_backend.list_tasks(
        cluster.name,
        instance_ref,
        self._get_param("family"),
        self._get_param("startedBy"),
        self._get_param("serviceName"),
        desired,
    )
    # moto matches the cluster and the instance as substrings ("c1" finds "c10"'s tasks).
    tasks = [t for t in tasks if t.cluster_name == cluster.name and _on_instance(t, instance_ref)]
    page, token = paginate(
        tasks, lambda t: (t.task_arn,), "ListTasks", self._get_param("maxResults"), self._get_param("nextToken")
    )
    return ActionResult(_with_token({"taskArns": [t.task_arn for t in page]}, token))


def list_container_instances_response(self: Any) -> ActionResult:
    """ListContainerInstances of an existing cluster, by status, with pagination."""
    cluster = self.ecs_backend._get_cluster(self._get_param("cluster", "default"))
    status = self._get_param("status")
    if status is not None and status not in LISTABLE_INSTANCE_STATUSES:
        raise InvalidParameterException(
            f"status should be one of [{', '.join(LISTABLE_INSTANCE_STATUSES)}]"
        )
    # Without a status ECS lists every instance that is not INACTIVE.
    wanted = (lambda s: s == status) if status is not None else (lambda s: s != "INACTIVE")
    instances = [
        instance
        for instance in self.ecs_backend.container_instances.get(cluster.name, {}).values()
        if wanted(instance.status)
    ]
    page, token = paginate(
        instances,
        lambda instance: (instance.container_instance_arn,),
        "ListContainerInstances",
        self._get_param("maxResults"),
        self._get_param("nextToken"),
    )
    return ActionResult(_with_token({"containerInstanceArns": [i.container_instance_arn for i in page]}, token))


def describe_tasks_response(self: Any) -> ActionResult:
    """DescribeTasks for one cluster's tasks by exact ARN or id, 1-100 of them; a task the
    cluster does not know is a failure with reason MISSING."""
    cluster = self.ecs_backend._get_cluster(self._get_param("cluster", "default"))
    refs = self._get_param("tasks") or []
    if not refs:
        raise InvalidParameterException("Tasks cannot be empty.")
    if len(refs) > MAX_TASKS_PER_DESCRIBE:
        raise InvalidParameterException(f"tasks can have at most {MAX_TASKS_PER_DESCRIBE} items.")
    known = self.ecs_backend.tasks.get(cluster.name, {})
    tasks, failures = [], []
    for ref in refs:
        task = known.get(ref) or next((t for t in known.values() if t.id == ref), None)
        if task is None:
            failures.append({"arn": ref, "reason": "MISSING"})
        elif task not in tasks:
            tasks.append(task)
    if "TAGS" in (self._get_param("include") or []):
        self._include_in_response(DESCRIBE_TASKS_TAGS)
    else:
        self._exclude_from_response(DESCRIBE_TASKS_TAGS)
    return ActionResult({"tasks": tasks, "failures": failures})


def describe_container_instances_response(self: Any) -> ActionResult:
    """DescribeContainerInstances with `healthStatus` only when `include` asks for it."""
    if health.INCLUDE in (self._get_param("include") or []):
        self._include_in_response(DESCRIBE_INSTANCES_HEALTH)
    else:
        self._exclude_from_response(DESCRIBE_INSTANCES_HEALTH)
    cluster_str = self._get_param("cluster", "default")
    instances, failures = self.ecs_backend.describe_container_instances(
        cluster_str, self._get_param("containerInstances")
    )
    return ActionResult({"failures": failures, "containerInstances": instances})


def _on_instance(task: Any, instance_ref: str | None) -> bool:
    if not instance_ref:
        return True
    arn = task.container_instance_arn or ""
    return arn == instance_ref or arn.rsplit("/", 1)[-1] == instance_ref


def _with_token(body: dict[str, Any], token: str | None) -> dict[str, Any]:
    if token is not None:
        body["nextToken"] = token
    return body


def format_attributes(attributes: dict[str, str | None] | None) -> list[dict[str, str]] | None:
    """moto keeps attributes as a dict; ECS sends a list of {name, value?}."""
    if attributes is None:
        return None
    return [{"name": n} if v is None else {"name": n, "value": v} for n, v in attributes.items()]


# --- installation ------------------------------------------------------------------------

_BACKEND_PATCHES = {
    "put_attributes": put_attributes,
    "delete_attributes": delete_attributes,
    "list_attributes": list_attributes,
    "update_container_instances_state": update_container_instances_state,
}
_RESPONSE_PATCHES = {
    "list_attributes": list_attributes_response,
    "list_tasks": list_tasks_response,
    "list_container_instances": list_container_instances_response,
    "describe_tasks": describe_tasks_response,
    "describe_container_instances": describe_container_instances_response,
}
_ATTRIBUTE_PATHS = (
    "DescribeContainerInstancesResponse.containerInstances.ContainerInstance.attributes",
    "RegisterContainerInstanceResponse.containerInstance.attributes",
    "UpdateContainerInstancesStateResponse.containerInstances.ContainerInstance.attributes",
    "DeregisterContainerInstanceResponse.containerInstance.attributes",
)
DESCRIBE_INSTANCES_HEALTH = "DescribeContainerInstancesResponse.containerInstances.ContainerInstance.healthStatus"
#: Responses that carry a ContainerInstance but have no `include`: ECS leaves its health out.
_HEALTHLESS_PATHS = (
    "RegisterContainerInstanceResponse.containerInstance.healthStatus",
    "UpdateContainerInstancesStateResponse.containerInstances.ContainerInstance.healthStatus",
    "DeregisterContainerInstanceResponse.containerInstance.healthStatus",
)
_applied = False


def apply() -> None:
    """Install every patch (idempotent); fails if moto lacks a method this file replaces."""
    global _applied
    if _applied:
        return
    targets = [(EC2ContainerServiceBackend, _BACKEND_PATCHES), (EC2ContainerServiceResponse, _RESPONSE_PATCHES)]
    for cls, patches in targets:
        missing = [name for name in patches if not callable(getattr(cls, name, None))]
        if missing:
            raise RuntimeError(f"moto {moto.__version__}: {cls.__name__} lacks {missing}; cannot patch")
    if not callable(getattr(Task, "advance", None)):
        raise RuntimeError(f"moto {moto.__version__}: ecs Task lacks advance(); cannot freeze it")
    if hasattr(ContainerInstance, "health_status"):
        raise RuntimeError(f"moto {moto.__version__}: ContainerInstance has its own health_status; port the patch")
    for cls, patches in targets:
        for name, func in patches.items():
            setattr(cls, name, func)
    Task.advance = _frozen_advance
    for path in _ATTRIBUTE_PATHS:
        EC2ContainerServiceResponse.RESPONSE_KEY_PATH_TO_TRANSFORMER[path] = format_attributes
    # The serializer reads `healthStatus` off the model as `health_status`.
    ContainerInstance.health_status = property(health.health_status)
    for path in _HEALTHLESS_PATHS:
        EC2ContainerServiceResponse.RESPONSE_KEY_PATH_TO_TRANSFORMER[path] = never_return
    _applied = True
    log.debug("moto %s ECS patches applied", moto.__version__)
