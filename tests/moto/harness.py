"""The test harness in front of moto: fault injection, call counting and `/_harness/*` routes.

It is a WSGI middleware on the same port as moto, so a Rust test needs one address only.
ECS requests are recognised by their `X-Amz-Target` header (awsJson1_1); every other request
goes to moto untouched. Routes answer JSON; a bad request answers 400 `{"error": "..."}`.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.exceptions import ServiceException
from moto.ec2.models import ec2_backends
from moto.ecs.models import ecs_backends
from moto.moto_api._internal.models import moto_api_backend

import instance_health
from ecs_patches import LOCK, SCHEDULER
from stopping import LAST_STATUSES_WHILE_STOPPING, STOPPED, begin_stop, finish_stop

log = logging.getLogger("moto-harness.routes")

ECS_TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
AWS_JSON = "application/x-amz-json-1.1"
HARNESS_TASK_FAMILY = "harness-task"
HARNESS_SERVICE_GROUP = "service:harness-service"
HARNESS_STOP_REASON = "Stopped by the test harness"
# The access key a SigV4 request was signed with: the fleet tests give each host its own, so
# that a call can be told apart by the host that made it.
SIGNED_BY = re.compile(r"Credential=([^/,\s]+)/")
# The calls whose attributes the call log keeps: the writes and deletions of claims and markers.
ATTRIBUTE_WRITES = ("PutAttributes", "DeleteAttributes")

StartResponse = Callable[..., Any]


class BadRequest(Exception):
    """A harness request the route cannot act on (answered 400, or `status`)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Faults:
    """What the harness does to ECS requests before moto sees them."""

    throttle_every: int = 0
    unavailable: bool = False
    latency_ms: int = 0


class Harness:
    """WSGI middleware: routes `/_harness/*`, counts and faults ECS calls, locks moto."""

    def __init__(self, moto_app: Any, region: str, account_id: str = DEFAULT_ACCOUNT_ID) -> None:
        self._moto = moto_app
        self._region = region
        self._account = account_id
        self._state_lock = threading.Lock()
        self._faults = Faults()
        self._calls: Counter[str] = Counter()
        self._call_log: list[dict[str, Any]] = []
        self._since_throttle_set = 0
        self._routes = {
            ("POST", "/_harness/reset"): self._reset,
            ("POST", "/_harness/seed"): self._seed,
            ("POST", "/_harness/tasks"): self._tasks,
            ("POST", "/_harness/faults"): self._set_faults,
            ("GET", "/_harness/calls"): self._get_calls,
            ("POST", "/_harness/calls/reset"): self._reset_calls,
            ("GET", "/_harness/call-log"): self._get_call_log,
            ("GET", "/_harness/state"): self._state,
            ("POST", "/_harness/tags"): self._tags,
            ("POST", "/_harness/instance-status"): self._instance_status,
            ("POST", "/_harness/task-status"): self._task_status,
            ("POST", "/_harness/instance-health"): self._instance_health,
        }

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_harness/"):
            return self._route(environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith(ECS_TARGET_PREFIX):
            return self._ecs(target[len(ECS_TARGET_PREFIX) :], environ, start_response)
        return self._call_moto(environ, start_response)

    # --- ECS traffic -------------------------------------------------------------------

    def _ecs(self, operation: str, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        entry = _logged_call(operation, environ)
        with self._state_lock:
            self._calls[operation] += 1
            self._call_log.append(entry)
            self._since_throttle_set += 1
            faults = Faults(**asdict(self._faults))
            throttled = faults.throttle_every > 0 and self._since_throttle_set % faults.throttle_every == 0
        if faults.latency_ms > 0:
            time.sleep(faults.latency_ms / 1000.0)
        if faults.unavailable:
            log.info("%s answered 503: ECS marked unavailable", operation)
            return _aws_error(start_response, "503 Service Unavailable", "ServerException", "Service unavailable")
        if throttled:
            log.info("%s answered ThrottlingException: every %d-th call", operation, faults.throttle_every)
            return _aws_error(start_response, "400 Bad Request", "ThrottlingException", "Rate exceeded")
        return self._call_moto(environ, start_response)

    def _call_moto(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        # The body is produced inside the lock: moto serialises live model objects.
        with LOCK:
            result = self._moto(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()

    # --- routing -----------------------------------------------------------------------

    def _route(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        handler = self._routes.get((method, path))
        if handler is None:
            known = any(p == path for (_, p) in self._routes)
            status = 405 if known else 404
            return _json(start_response, status, {"error": f"no route {method} {path}"})
        try:
            body = _read_json(environ) if method == "POST" else {}
            query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
            with LOCK:
                answer = handler(body, query)
            return _json(start_response, 200, answer)
        except BadRequest as err:
            return _json(start_response, err.status, {"error": str(err)})
        except ServiceException as err:
            return _json(start_response, 400, {"error": f"{err.code}: {err.message}"})
        except Exception as err:  # a harness bug must reach the test as an answer, not a hang
            log.exception("harness route %s %s failed", method, path)
            return _json(start_response, 500, {"error": f"{type(err).__name__}: {err}"})

    @property
    def _ecs_backend(self) -> Any:
        return ecs_backends[self._account][self._region]

    @property
    def _ec2_backend(self) -> Any:
        return ec2_backends[self._account][self._region]

    # --- routes ------------------------------------------------------------------------

    def _reset(self, body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        SCHEDULER.reset()
        moto_api_backend.reset()
        with self._state_lock:
            self._faults = Faults()
            self._calls.clear()
            self._since_throttle_set = 0
        return {"reset": True}

    def _seed(self, body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        name = _field(body, "cluster", str)
        count = _field(body, "instances", int, default=1)
        tags = _field(body, "tags", dict, default={})
        if count < 0:
            raise BadRequest("instances must be >= 0")
        backend = self._ecs_backend
        cluster = backend.clusters.get(name)
        if cluster is None:
            cluster = backend.create_cluster(name, tags=[])
        cluster.tags = _merge_tags(cluster.tags or [], _str_map(tags, "tags"), [])
        arns = []
        if count:
            reservation = self._ec2_backend.run_instances(
                self._linux_image_id(), count, None, [], is_instance_type_default=True, instance_type="m5.large"
            )
            for ec2_instance in reservation.instances:
                arns.append(backend.register_container_instance(name, ec2_instance.id).container_instance_arn)
        log.info("seeded cluster %s with %d instance(s)", name, count)
        return {"cluster_arn": cluster.arn, "instances": arns}

    def _linux_image_id(self) -> str:
        # moto lists Windows AMIs first, and the instance's ecs.os-type follows its image.
        for image in self._ec2_backend.amis.values():
            if image.platform != "windows":
                return image.id
        raise BadRequest("moto offers no Linux image", status=500)

    def _tasks(self, body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        cluster = self._cluster(_field(body, "cluster", str))
        instance = self._instance(cluster.name, _field(body, "instance", str))
        started_by = _field(body, "started_by", str, default=None)
        count = _field(body, "count", int, default=1)
        if count < 1:
            raise BadRequest("count must be >= 1")
        backend = self._ecs_backend
        service = started_by is not None and started_by.startswith("ecs-svc/")
        tasks = backend.start_task(
            cluster.name,
            self._task_definition_arn(),
            [instance.container_instance_arn] * count,
            overrides={},
            started_by=started_by or "",
            group=HARNESS_SERVICE_GROUP if service else None,
        )
        return {"tasks": [task.task_arn for task in tasks]}

    def _task_definition_arn(self) -> str:
        backend = self._ecs_backend
        revisions = backend.task_definitions.get(HARNESS_TASK_FAMILY)
        if revisions:
            return revisions[max(revisions)].arn
        container = {"name": "app", "image": "busybox", "cpu": 1, "memory": 4, "essential": True}
        return backend.register_task_definition(HARNESS_TASK_FAMILY, [container], volumes=None).arn

    def _set_faults(self, body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        throttle_every = _count_field(body, "throttle_every")
        unavailable = _field(body, "unavailable", bool, default=None)
        latency_ms = _count_field(body, "latency_ms")
        drain_delay_ms = _count_field(body, "drain_delay_ms")
        stop_delay_ms = _count_field(body, "stop_delay_ms")
        with self._state_lock:
            if throttle_every is not None:
                self._faults.throttle_every = throttle_every
                self._since_throttle_set = 0
            if unavailable is not None:
                self._faults.unavailable = unavailable
            if latency_ms is not None:
                self._faults.latency_ms = latency_ms
            current = asdict(self._faults)
        if drain_delay_ms is not None:
            SCHEDULER.delay_ms = drain_delay_ms
        if stop_delay_ms is not None:
            SCHEDULER.stop_delay_ms = stop_delay_ms
        current["drain_delay_ms"] = SCHEDULER.delay_ms
        current["stop_delay_ms"] = SCHEDULER.stop_delay_ms
        log.info("faults now %s", current)
        return current

    def _get_calls(self, body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        with self._state_lock:
            return {"total": sum(self._calls.values()), "by_operation": dict(self._calls)}

    def _get_call_log(self, body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        with self._state_lock:
            return {"calls": list(self._call_log)}

    def _reset_calls(self, body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        with self._state_lock:
            self._calls.clear()
            self._call_log.clear()
        return {"total": 0, "by_operation": {}}

    def _state(self, body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        if "cluster" not in query:
            raise BadRequest("query parameter cluster is required")
        cluster = self._cluster(query["cluster"])
        backend = self._ecs_backend
        tasks = list(backend.tasks.get(cluster.name, {}).values())
        instances = []
        for instance in backend.container_instances.get(cluster.name, {}).values():
            arn = instance.container_instance_arn
            mine = [t for t in tasks if t.container_instance_arn == arn]
            instances.append(
                {
                    "arn": arn,
                    "status": instance.status,
                    "attributes": dict(instance.attributes),
                    "running_tasks": instance.running_tasks_count,
                    "tasks": [
                        {
                            "arn": t.task_arn,
                            "started_by": t.started_by or None,
                            "desired_status": t.desired_status,
                            "last_status": t.last_status,
                        }
                        for t in mine
                    ],
                }
            )
        return {"instances": instances}

    def _tags(self, body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        cluster = self._cluster(_field(body, "cluster", str))
        tags = _str_map(_field(body, "tags", dict, default={}), "tags")
        remove = _field(body, "remove", list, default=[])
        if not all(isinstance(key, str) for key in remove):
            raise BadRequest("remove must be a list of strings")
        cluster.tags = _merge_tags(cluster.tags or [], tags, remove)
        return {"tags": {t["key"]: t["value"] for t in cluster.tags}}

    def _instance_status(self, body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        cluster = self._cluster(_field(body, "cluster", str))
        instance = self._instance(cluster.name, _field(body, "instance", str))
        instance.status = _field(body, "status", str)
        return {"arn": instance.container_instance_arn, "status": instance.status}

    def _instance_health(self, body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        # Plays ECS's own checks: what DescribeContainerInstances reports from now on when asked
        # for CONTAINER_INSTANCE_HEALTH.
        cluster = self._cluster(_field(body, "cluster", str))
        instance = self._instance(cluster.name, _field(body, "instance", str))
        overall = _field(body, "overall", str)
        check = _field(body, "type", str, default=instance_health.DEFAULT_CHECK)
        reason = _field(body, "reason", str, default=None)
        try:
            health = instance_health.set_health(instance, overall, check, reason)
        except ValueError as err:
            raise BadRequest(str(err)) from None
        log.info("instance %s health now %s (%s: %s)", instance.container_instance_arn, overall, check, reason)
        return {"arn": instance.container_instance_arn, "overall": health.overall, "type": health.check, "reason": health.reason}

    def _task_status(self, body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        # Plays the scheduler stopping one task: desired STOPPED, then the last status given.
        cluster = self._cluster(_field(body, "cluster", str))
        task = self._task(cluster.name, _field(body, "task", str))
        last = _field(body, "last_status", str)
        if last not in (*LAST_STATUSES_WHILE_STOPPING, STOPPED):
            raise BadRequest(f"last_status must be one of {[*LAST_STATUSES_WHILE_STOPPING, STOPPED]}")
        if task.last_status == STOPPED and last != STOPPED:
            raise BadRequest(f"task {task.task_arn} has stopped; a stopped task stays stopped")
        begin_stop(self._ecs_backend, cluster.name, task, HARNESS_STOP_REASON)
        if last == STOPPED:
            finish_stop(task)
        else:
            task.last_status = last
        return {"arn": task.task_arn, "desired_status": task.desired_status, "last_status": task.last_status}

    # --- lookups -----------------------------------------------------------------------

    def _cluster(self, name: str) -> Any:
        cluster = self._ecs_backend.clusters.get(name.rsplit("/", 1)[-1])
        if cluster is None:
            raise BadRequest(f"no cluster {name}", status=404)
        return cluster

    def _task(self, cluster_name: str, ref: str) -> Any:
        task_id = ref.rsplit("/", 1)[-1]
        for task in self._ecs_backend.tasks.get(cluster_name, {}).values():
            if task.id == task_id:
                return task
        raise BadRequest(f"no task {ref} in cluster {cluster_name}", status=404)

    def _instance(self, cluster_name: str, ref: str) -> Any:
        instance = self._ecs_backend.container_instances.get(cluster_name, {}).get(ref.rsplit("/", 1)[-1])
        if instance is None:
            raise BadRequest(f"no container instance {ref} in cluster {cluster_name}", status=404)
        return instance


# --- helpers -----------------------------------------------------------------------------

_MISSING = object()


def _field(body: dict[str, Any], key: str, kind: type, default: Any = _MISSING) -> Any:
    value = body.get(key, _MISSING)
    if value is _MISSING or (value is None and default is not _MISSING):
        if default is _MISSING:
            raise BadRequest(f"{key} is required")
        return default
    # bool is an int in Python; a JSON true is no instance count.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"{key} must be a {kind.__name__}")
    return value


def _count_field(body: dict[str, Any], key: str) -> int | None:
    value = _field(body, key, int, default=None)
    if value is not None and value < 0:
        raise BadRequest(f"{key} must be >= 0")
    return value


def _str_map(value: dict[str, Any], key: str) -> dict[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadRequest(f"{key} must map strings to strings")
    return value


def _merge_tags(existing: list[dict[str, str]], set_tags: dict[str, str], remove: list[str]) -> list[dict[str, str]]:
    merged = {t["key"]: t["value"] for t in existing}
    merged.update(set_tags)
    for key in remove:
        merged.pop(key, None)
    return [{"key": k, "value": v} for k, v in merged.items()]


def _logged_call(operation: str, environ: dict[str, Any]) -> dict[str, Any]:
    """What the call log keeps of one ECS request: the access key that signed it (None if
    unsigned), the operation and, for attribute writes and deletions, the attributes named.
    The body read here is put back for moto."""
    signed = SIGNED_BY.search(environ.get("HTTP_AUTHORIZATION", ""))
    entry: dict[str, Any] = {"key": signed.group(1) if signed else None, "operation": operation}
    if operation in ATTRIBUTE_WRITES:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        try:
            attributes = json.loads(raw).get("attributes", [])
        except (ValueError, AttributeError):
            attributes = []
        entry["attributes"] = [
            {"name": a.get("name"), "value": a.get("value")} for a in attributes if isinstance(a, dict)
        ]
    return entry


def _read_json(environ: dict[str, Any]) -> dict[str, Any]:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BadRequest("bad Content-Length") from None
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as err:
        raise BadRequest(f"body is not JSON: {err}") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _json(start_response: StartResponse, status: int, body: Any) -> list[bytes]:
    reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}
    data = json.dumps(body).encode()
    start_response(
        f"{status} {reasons.get(status, 'Error')}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


def _aws_error(start_response: StartResponse, status: str, code: str, message: str) -> list[bytes]:
    data = json.dumps({"__type": code, "message": message}).encode()
    start_response(
        status,
        [
            ("Content-Type", AWS_JSON),
            ("Content-Length", str(len(data))),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ],
    )
    return [data]
