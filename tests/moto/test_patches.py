"""Proofs that the patched moto behaves like the documented ECS, and that the harness routes work.

Each test names, where moto 5.2.5 itself differs, what unpatched moto does instead ("Unpatched:").
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, HERE, REGION, Server, start_server, stop_server

CI = "container-instance"


def error_code(call: Callable[..., Any], **kwargs: Any) -> str:
    """The ECS error code `call(**kwargs)` fails with."""
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return caught.value.response["Error"]["Code"]


def names_by_target(attributes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for attr in attributes:
        out.setdefault(attr["targetId"], {})[attr["name"]] = attr.get("value")
    return out


def put(ecs: Any, cluster: str, target: str, name: str, value: str | None = None) -> None:
    attr = {"name": name, "targetId": target}
    if value is not None:
        attr["value"] = value
    ecs.put_attributes(cluster=cluster, attributes=[attr])


def describe(ecs: Any, cluster: str, arn: str) -> dict[str, Any]:
    return ecs.describe_container_instances(cluster=cluster, containerInstances=[arn])["containerInstances"][0]


def all_pages(ecs: Any, operation: str, key: str, **kwargs: Any) -> list[Any]:
    items: list[Any] = []
    for page in ecs.get_paginator(operation).paginate(**kwargs):
        items.extend(page[key])
    return items


# --- ListAttributes ----------------------------------------------------------------------


def test_list_attributes_by_name_only_returns_attributes_with_values(server: Server, ecs: Any) -> None:
    """Unpatched: a name-only filter matched only value-less attributes, so this returned []."""
    a, b, c = server.seed("c1", 3)
    put(ecs, "c1", a, "lease", "holder-a:1")
    put(ecs, "c1", b, "lease", "holder-b:1")
    put(ecs, "c1", c, "other", "x")
    got = ecs.list_attributes(cluster="c1", targetType=CI, attributeName="lease")["attributes"]
    assert names_by_target(got) == {a: {"lease": "holder-a:1"}, b: {"lease": "holder-b:1"}}


def test_list_attributes_by_name_and_value(server: Server, ecs: Any) -> None:
    a, b = server.seed("c1", 2)
    put(ecs, "c1", a, "lease", "one")
    put(ecs, "c1", b, "lease", "two")
    got = ecs.list_attributes(cluster="c1", targetType=CI, attributeName="lease", attributeValue="two")
    assert names_by_target(got["attributes"]) == {b: {"lease": "two"}}


def test_list_attributes_filters_per_cluster(server: Server, ecs: Any) -> None:
    """Unpatched: the cluster filter compared against the last cluster iterated, so asking for
    one cluster returned another's attributes."""
    a1, a2 = server.seed("mc-a", 2)
    (b1,) = server.seed("mc-b", 1)
    for arn, cluster in ((a1, "mc-a"), (a2, "mc-a"), (b1, "mc-b")):
        put(ecs, cluster, arn, "lease", cluster)
    for cluster, members in (("mc-a", {a1, a2}), ("mc-b", {b1})):
        got = ecs.list_attributes(cluster=cluster, targetType=CI, attributeName="lease")["attributes"]
        assert {x["targetId"] for x in got} == members
        assert {x["value"] for x in got} == {cluster}


def test_list_attributes_unknown_or_missing_default_cluster_is_not_found(server: Server, ecs: Any) -> None:
    """Unpatched: an unknown cluster returned every cluster's attributes."""
    server.seed("c1", 1)
    assert error_code(ecs.list_attributes, cluster="nope", targetType=CI) == "ClusterNotFoundException"
    assert error_code(ecs.list_attributes, targetType=CI) == "ClusterNotFoundException"


def test_list_attributes_without_cluster_uses_default(server: Server, ecs: Any) -> None:
    """Unpatched: no cluster listed every cluster's attributes."""
    (d,) = server.seed("default", 1)
    (other,) = server.seed("c1", 1)
    put(ecs, "default", d, "lease", "d")
    put(ecs, "c1", other, "lease", "o")
    got = ecs.list_attributes(targetType=CI, attributeName="lease")["attributes"]
    assert names_by_target(got) == {d: {"lease": "d"}}


def test_list_attributes_value_without_name_is_invalid(server: Server, ecs: Any) -> None:
    """Unpatched: the value was ignored and everything came back."""
    server.seed("c1", 1)
    code = error_code(ecs.list_attributes, cluster="c1", targetType=CI, attributeValue="x")
    assert code == "InvalidParameterException"


def test_list_attributes_paginates_with_max_results(server: Server, ecs: Any) -> None:
    """Unpatched: maxResults was ignored (25 items, no token for maxResults=2)."""
    server.seed("c1", 3)  # 3 x 4 built-in ecs.* attributes
    first = ecs.list_attributes(cluster="c1", targetType=CI, maxResults=5)
    assert len(first["attributes"]) == 5 and first.get("nextToken")
    collected = all_pages(ecs, "list_attributes", "attributes", cluster="c1", targetType=CI, PaginationConfig={"PageSize": 5})
    whole = ecs.list_attributes(cluster="c1", targetType=CI)
    assert "nextToken" not in whole
    as_keys = lambda xs: sorted((x["targetId"], x["name"]) for x in xs)  # noqa: E731
    assert len(collected) == 12
    assert as_keys(collected) == as_keys(whole["attributes"])
    assert len(set(as_keys(collected))) == 12


def test_list_attributes_default_page_is_100(server: Server, ecs: Any) -> None:
    server.seed("c1", 26)  # 104 built-in attributes
    first = ecs.list_attributes(cluster="c1", targetType=CI)
    assert len(first["attributes"]) == 100
    second = ecs.list_attributes(cluster="c1", targetType=CI, nextToken=first["nextToken"])
    assert len(second["attributes"]) == 4 and "nextToken" not in second


def test_list_attributes_pages_survive_writes_between_pages(server: Server, ecs: Any) -> None:
    arns = server.seed("c1", 4)
    first = ecs.list_attributes(cluster="c1", targetType=CI, attributeName="ecs.os-type", maxResults=2)
    put(ecs, "c1", first["attributes"][0]["targetId"], "unrelated", "x")
    rest = ecs.list_attributes(
        cluster="c1", targetType=CI, attributeName="ecs.os-type", nextToken=first["nextToken"]
    )
    seen = [x["targetId"] for x in first["attributes"] + rest["attributes"]]
    assert sorted(seen) == sorted(arns)


def test_list_attributes_rejects_bad_page_arguments(server: Server, ecs: Any) -> None:
    """Unpatched: maxResults=0 and a bogus token were accepted."""
    server.seed("c1", 1)
    for bad in (0, 101):
        assert error_code(ecs.list_attributes, cluster="c1", targetType=CI, maxResults=bad) == "InvalidParameterException"
    assert error_code(ecs.list_attributes, cluster="c1", targetType=CI, nextToken="bogus!") == "InvalidParameterException"
    tasks_token = "eyJzY29wZSI6Ikxpc3RUYXNrcyIsImFmdGVyIjpbIngiXX0="  # a ListTasks token
    assert error_code(ecs.list_attributes, cluster="c1", targetType=CI, nextToken=tasks_token) == "InvalidParameterException"


# --- DeleteAttributes --------------------------------------------------------------------


def test_delete_attributes_by_name_without_value_deletes(server: Server, ecs: Any) -> None:
    """Unpatched: the documented value-less form answered 200 and deleted nothing."""
    (a,) = server.seed("c1", 1)
    put(ecs, "c1", a, "lease", "holder:1")
    ecs.delete_attributes(cluster="c1", attributes=[{"name": "lease", "targetId": a}])
    assert ecs.list_attributes(cluster="c1", targetType=CI, attributeName="lease")["attributes"] == []
    assert "lease" not in {x["name"] for x in describe(ecs, "c1", a)["attributes"]}


def test_delete_attributes_is_not_compare_and_delete(server: Server, ecs: Any) -> None:
    """Unpatched: a delete only worked when its value equalled the stored one, a conditional
    delete real ECS does not have."""
    (a,) = server.seed("c1", 1)
    put(ecs, "c1", a, "lease", "current")
    ecs.delete_attributes(cluster="c1", attributes=[{"name": "lease", "value": "stale", "targetId": a}])
    assert ecs.list_attributes(cluster="c1", targetType=CI, attributeName="lease")["attributes"] == []


def test_delete_missing_attribute_succeeds(server: Server, ecs: Any) -> None:
    (a,) = server.seed("c1", 1)
    answer = ecs.delete_attributes(cluster="c1", attributes=[{"name": "never-set", "targetId": a}])
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_delete_attributes_needs_a_target(server: Server, ecs: Any) -> None:
    """Unpatched: without a targetId moto applied the delete to every instance of the cluster."""
    a, b = server.seed("c1", 2)
    put(ecs, "c1", a, "lease", "x")
    put(ecs, "c1", b, "lease", "x")
    assert error_code(ecs.delete_attributes, cluster="c1", attributes=[{"name": "lease", "value": "x"}]) == "InvalidParameterException"
    short = a.rsplit("/", 1)[-1]
    assert error_code(ecs.delete_attributes, cluster="c1", attributes=[{"name": "lease", "targetId": short}]) == "InvalidParameterException"
    assert len(ecs.list_attributes(cluster="c1", targetType=CI, attributeName="lease")["attributes"]) == 2
    unknown = a.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    assert error_code(ecs.delete_attributes, cluster="c1", attributes=[{"name": "lease", "targetId": unknown}]) == "TargetNotFoundException"


# --- PutAttributes -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a=b", "a b", "lease#1", "x" * 129, "ünïcode"])
def test_put_attributes_rejects_invalid_names(server: Server, ecs: Any, name: str) -> None:
    """Unpatched: no validation at all."""
    (a,) = server.seed("c1", 1)
    code = error_code(ecs.put_attributes, cluster="c1", attributes=[{"name": name, "value": "v", "targetId": a}])
    assert code == "InvalidParameterException"


@pytest.mark.parametrize("value", ["", " lead", "trail ", "a#b", "k=v", "a,b", '{"a":1}', "v" * 129])
def test_put_attributes_rejects_invalid_values(server: Server, ecs: Any, value: str) -> None:
    """Unpatched: no validation at all (JSON, '=', '#' and empty values were stored)."""
    (a,) = server.seed("c1", 1)
    code = error_code(ecs.put_attributes, cluster="c1", attributes=[{"name": "lease", "value": value, "targetId": a}])
    assert code == "InvalidParameterException"
    assert ecs.list_attributes(cluster="c1", targetType=CI, attributeName="lease")["attributes"] == []


def test_put_attributes_accepts_the_edges_of_the_rules(server: Server, ecs: Any) -> None:
    (a,) = server.seed("c1", 1)
    accepted = {
        "n" * 128: "v" * 128,
        "br-update.lease": "v1:host-a:1700000000:1700000600:ab12",
        "a_b/c\\d.e-f": "user@host:/p\\q a_b.c-d",
        "flag": None,
    }
    ecs.put_attributes(
        cluster="c1",
        attributes=[{"name": n, "targetId": a, **({} if v is None else {"value": v})} for n, v in accepted.items()],
    )
    stored = {x["name"]: x.get("value") for x in describe(ecs, "c1", a)["attributes"]}
    for name, value in accepted.items():
        assert name in stored and stored[name] == value


def test_put_attributes_at_most_10_per_call(server: Server, ecs: Any) -> None:
    """Unpatched: 12 attributes in one call were accepted."""
    a, b = server.seed("c1", 2)
    eleven = [{"name": f"k{i}", "value": "v", "targetId": a if i < 6 else b} for i in range(11)]
    assert error_code(ecs.put_attributes, cluster="c1", attributes=eleven) == "InvalidParameterException"
    ecs.put_attributes(cluster="c1", attributes=eleven[:10])
    assert len(ecs.list_attributes(cluster="c1", targetType=CI, attributeName="k9")["attributes"]) == 1


def test_put_attributes_at_most_10_custom_per_instance(server: Server, ecs: Any) -> None:
    """Unpatched: 15 custom attributes on one instance were accepted."""
    (a,) = server.seed("c1", 1)
    ecs.put_attributes(cluster="c1", attributes=[{"name": f"k{i}", "value": "v", "targetId": a} for i in range(10)])
    code = error_code(ecs.put_attributes, cluster="c1", attributes=[{"name": "k10", "value": "v", "targetId": a}])
    assert code == "AttributeLimitExceededException"
    put(ecs, "c1", a, "k3", "overwritten-at-the-limit")
    stored = {x["name"]: x.get("value") for x in describe(ecs, "c1", a)["attributes"]}
    assert stored["k3"] == "overwritten-at-the-limit"
    assert sum(1 for n in stored if not n.startswith("ecs.")) == 10
    assert sum(1 for n in stored if n.startswith("ecs.")) == 4  # built-ins do not count


def test_put_attributes_over_the_limit_writes_nothing(server: Server, ecs: Any) -> None:
    (a,) = server.seed("c1", 1)
    ecs.put_attributes(cluster="c1", attributes=[{"name": f"k{i}", "value": "v", "targetId": a} for i in range(9)])
    two_new = [{"name": "new1", "value": "v", "targetId": a}, {"name": "new2", "value": "v", "targetId": a}]
    assert error_code(ecs.put_attributes, cluster="c1", attributes=two_new) == "AttributeLimitExceededException"
    assert "new1" not in {x["name"] for x in describe(ecs, "c1", a)["attributes"]}


def test_put_attributes_short_id_needs_target_type(server: Server, ecs: Any) -> None:
    """Unpatched: a short id without targetType was accepted."""
    (a,) = server.seed("c1", 1)
    short = a.rsplit("/", 1)[-1]
    code = error_code(ecs.put_attributes, cluster="c1", attributes=[{"name": "lease", "value": "v", "targetId": short}])
    assert code == "InvalidParameterException"
    ecs.put_attributes(cluster="c1", attributes=[{"name": "lease", "value": "v", "targetId": short, "targetType": CI}])
    assert names_by_target(ecs.list_attributes(cluster="c1", targetType=CI, attributeName="lease")["attributes"]) == {a: {"lease": "v"}}


def test_put_attributes_without_target_is_rejected(server: Server, ecs: Any) -> None:
    """Unpatched: without a targetId moto wrote the attribute to every instance of the cluster."""
    server.seed("c1", 3)
    assert error_code(ecs.put_attributes, cluster="c1", attributes=[{"name": "lease", "value": "v"}]) == "InvalidParameterException"
    assert ecs.list_attributes(cluster="c1", targetType=CI, attributeName="lease")["attributes"] == []


def test_put_attributes_target_in_other_cluster_is_not_found(server: Server, ecs: Any) -> None:
    server.seed("c1", 1)
    (other,) = server.seed("c2", 1)
    code = error_code(ecs.put_attributes, cluster="c1", attributes=[{"name": "lease", "value": "v", "targetId": other}])
    assert code == "TargetNotFoundException"
    assert error_code(ecs.put_attributes, cluster="nope", attributes=[{"name": "lease", "value": "v", "targetId": other}]) == "ClusterNotFoundException"


def test_put_attributes_is_last_writer_wins(server: Server, ecs: Any) -> None:
    (a,) = server.seed("c1", 1)
    put(ecs, "c1", a, "lease", "node-a")
    put(ecs, "c1", a, "lease", "node-b")
    assert ecs.list_attributes(cluster="c1", targetType=CI, attributeName="lease")["attributes"][0]["value"] == "node-b"


# --- UpdateContainerInstancesState -------------------------------------------------------


def test_update_state_at_most_10_instances(server: Server, ecs: Any) -> None:
    """Unpatched: 11 ids were accepted."""
    arns = server.seed("c1", 11)
    code = error_code(ecs.update_container_instances_state, cluster="c1", containerInstances=arns, status="DRAINING")
    assert code == "InvalidParameterException"
    assert {describe(ecs, "c1", arn)["status"] for arn in arns} == {"ACTIVE"}
    answer = ecs.update_container_instances_state(cluster="c1", containerInstances=arns[:10], status="DRAINING")
    assert len(answer["containerInstances"]) == 10 and answer["failures"] == []


def test_update_state_response_carries_attributes(server: Server, ecs: Any) -> None:
    """Unpatched: the response's attributes were serialised as [{}]."""
    (a,) = server.seed("c1", 1)
    put(ecs, "c1", a, "lease", "holder:1")
    answer = ecs.update_container_instances_state(cluster="c1", containerInstances=[a], status="DRAINING")
    got = answer["containerInstances"][0]
    assert {"name": "ecs.os-type", "value": "linux"} in got["attributes"]
    assert {"name": "lease", "value": "holder:1"} in got["attributes"]
    assert got["attributes"] == describe(ecs, "c1", a)["attributes"]
    assert got["status"] == "DRAINING"


def test_deregister_response_carries_attributes(server: Server, ecs: Any) -> None:
    """Unpatched: the response's attributes were serialised as [{}]."""
    (a,) = server.seed("c1", 1)
    put(ecs, "c1", a, "lease", "holder:1")
    got = ecs.deregister_container_instance(cluster="c1", containerInstance=a)["containerInstance"]
    assert {"name": "lease", "value": "holder:1"} in got["attributes"]
    assert error_code(ecs.put_attributes, cluster="c1", attributes=[{"name": "x", "value": "y", "targetId": a}]) == "TargetNotFoundException"


def test_update_state_allows_only_active_and_draining(server: Server, ecs: Any) -> None:
    """Unpatched: any instance could be set, whatever its status, and lowercase was accepted."""
    a, b = server.seed("c1", 2)
    for status in ("DRAINING", "DRAINING", "ACTIVE", "ACTIVE"):
        answer = ecs.update_container_instances_state(cluster="c1", containerInstances=[a], status=status)
        assert answer["failures"] == [] and answer["containerInstances"][0]["status"] == status
    server.ok("POST", "/_harness/instance-status", {"cluster": "c1", "instance": b, "status": "REGISTERING"})
    answer = ecs.update_container_instances_state(cluster="c1", containerInstances=[b], status="DRAINING")
    assert answer["containerInstances"] == []
    assert [(f["arn"], f["reason"]) for f in answer["failures"]] == [(b, "INVALID_STATUS")]
    assert describe(ecs, "c1", b)["status"] == "REGISTERING"
    for bad in ("draining", "INACTIVE"):
        code = error_code(ecs.update_container_instances_state, cluster="c1", containerInstances=[a], status=bad)
        assert code == "InvalidParameterException"


def test_update_state_reports_missing_instances(server: Server, ecs: Any) -> None:
    (a,) = server.seed("c1", 1)
    answer = ecs.update_container_instances_state(cluster="c1", containerInstances=[a, "missing-id"], status="DRAINING")
    assert [x["containerInstanceArn"] for x in answer["containerInstances"]] == [a]
    assert [f["reason"] for f in answer["failures"]] == ["MISSING"]


# --- draining: the scheduler's part ------------------------------------------------------


def running_count(ecs: Any, cluster: str, arn: str) -> int:
    return describe(ecs, cluster, arn)["runningTasksCount"]


def wait_for(check: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    """Poll until `check()` holds; the timeout is only a safety net."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_drain_stops_service_tasks_and_keeps_standalone(server: Server, ecs: Any) -> None:
    """Unpatched: DRAINING changed the status only; every task kept running."""
    a, b = server.seed("c1", 2)
    service = server.tasks("c1", a, "ecs-svc/1234567890", 2)
    standalone = server.tasks("c1", a, None, 1)
    elsewhere = server.tasks("c1", b, "ecs-svc/1234567890", 1)
    assert running_count(ecs, "c1", a) == 3
    ecs.update_container_instances_state(cluster="c1", containerInstances=[a], status="DRAINING")
    assert running_count(ecs, "c1", a) == 1
    assert ecs.list_tasks(cluster="c1", containerInstance=a)["taskArns"] == standalone
    stopped = ecs.list_tasks(cluster="c1", containerInstance=a, desiredStatus="STOPPED")["taskArns"]
    assert sorted(stopped) == sorted(service)
    assert ecs.list_tasks(cluster="c1", containerInstance=b)["taskArns"] == elsewhere
    details = ecs.describe_tasks(cluster="c1", tasks=service)["tasks"]
    assert {t["lastStatus"] for t in details} == {"STOPPED"} and all(t["stoppedReason"] for t in details)


def test_drain_delay_stops_service_tasks_later(server: Server, ecs: Any) -> None:
    (a,) = server.seed("c1", 1)
    server.tasks("c1", a, "ecs-svc/1", 2)
    server.tasks("c1", a, "standalone-runner", 1)
    delay_ms = 800
    server.ok("POST", "/_harness/faults", {"drain_delay_ms": delay_ms})
    started = time.monotonic()
    answer = ecs.update_container_instances_state(cluster="c1", containerInstances=[a], status="DRAINING")
    # The scheduler cannot act inside the call that starts the drain.
    assert answer["containerInstances"][0]["runningTasksCount"] == 3
    assert wait_for(lambda: running_count(ecs, "c1", a) == 1)
    assert time.monotonic() - started >= delay_ms / 1000.0
    assert running_count(ecs, "c1", a) == 1


def test_reactivating_before_the_drain_delay_keeps_tasks(server: Server, ecs: Any) -> None:
    (a,) = server.seed("c1", 1)
    server.tasks("c1", a, "ecs-svc/1", 2)
    delay_ms = 1000
    for _ in range(4):
        server.ok("POST", "/_harness/faults", {"drain_delay_ms": delay_ms})
        ecs.update_container_instances_state(cluster="c1", containerInstances=[a], status="DRAINING")
        back = ecs.update_container_instances_state(cluster="c1", containerInstances=[a], status="ACTIVE")
        if back["containerInstances"][0]["runningTasksCount"] == 2:
            break
        # The machine stalled past the delay between the two calls: start over, slower.
        server.ok("POST", "/_harness/reset")
        (a,) = server.seed("c1", 1)
        server.tasks("c1", a, "ecs-svc/1", 2)
        delay_ms *= 3
    else:
        pytest.fail("could not reactivate within the drain delay even at 27 s")
    time.sleep(delay_ms / 1000.0 + 0.5)
    assert running_count(ecs, "c1", a) == 2
    assert len(ecs.list_tasks(cluster="c1", containerInstance=a)["taskArns"]) == 2


def task_statuses(ecs: Any, cluster: str, tasks: list[str]) -> dict[str, tuple[str, str]]:
    """(desiredStatus, lastStatus) by task ARN."""
    described = ecs.describe_tasks(cluster=cluster, tasks=tasks)["tasks"]
    return {t["taskArn"]: (t["desiredStatus"], t["lastStatus"]) for t in described}


def test_drain_with_a_stop_delay_leaves_service_tasks_stopping_first(server: Server, ecs: Any) -> None:
    """Unpatched: DRAINING changed the status only. Patched without a stop delay, a drained service
    task went straight to STOPPED; in ECS it keeps running, desired STOPPED, through its load
    balancer's deregistration delay and its stop timeout."""
    (a,) = server.seed("c1", 1)
    service = server.tasks("c1", a, "ecs-svc/1", 2)
    standalone = server.tasks("c1", a, None, 1)
    stop_delay_ms = 1500
    server.ok("POST", "/_harness/faults", {"stop_delay_ms": stop_delay_ms})
    started = time.monotonic()
    ecs.update_container_instances_state(cluster="c1", containerInstances=[a], status="DRAINING")
    statuses = task_statuses(ecs, "c1", service + standalone)
    if time.monotonic() - started < stop_delay_ms / 1000.0:
        assert {statuses[t] for t in service} == {("STOPPED", "RUNNING")}
        assert sorted(ecs.list_tasks(cluster="c1", containerInstance=a, desiredStatus="STOPPED")["taskArns"]) == sorted(service)
    assert statuses[standalone[0]] == ("RUNNING", "RUNNING")
    # runningTasksCount counts desired RUNNING: the stopping tasks have left it already.
    assert running_count(ecs, "c1", a) == 1
    assert ecs.list_tasks(cluster="c1", containerInstance=a)["taskArns"] == standalone
    assert wait_for(lambda: {task_statuses(ecs, "c1", service)[t] for t in service} == {("STOPPED", "STOPPED")})
    assert time.monotonic() - started >= stop_delay_ms / 1000.0
    assert task_statuses(ecs, "c1", standalone) == {standalone[0]: ("RUNNING", "RUNNING")}


def test_reactivating_does_not_bring_stopping_tasks_back(server: Server, ecs: Any) -> None:
    (a,) = server.seed("c1", 1)
    service = server.tasks("c1", a, "ecs-svc/1", 1)
    server.ok("POST", "/_harness/faults", {"stop_delay_ms": 600})
    ecs.update_container_instances_state(cluster="c1", containerInstances=[a], status="DRAINING")
    ecs.update_container_instances_state(cluster="c1", containerInstances=[a], status="ACTIVE")
    assert task_statuses(ecs, "c1", service)[service[0]][0] == "STOPPED"
    assert wait_for(lambda: task_statuses(ecs, "c1", service)[service[0]] == ("STOPPED", "STOPPED"))
    assert running_count(ecs, "c1", a) == 0


# --- ListTasks and DescribeTasks ---------------------------------------------------------


def test_list_tasks_defaults_to_running(server: Server, ecs: Any) -> None:
    """Unpatched: ListTasks without desiredStatus listed stopped tasks too."""
    (a,) = server.seed("c1", 1)
    tasks = server.tasks("c1", a, None, 3)
    ecs.stop_task(cluster="c1", task=tasks[0], reason="test")
    assert sorted(ecs.list_tasks(cluster="c1")["taskArns"]) == sorted(tasks[1:])
    assert ecs.list_tasks(cluster="c1", desiredStatus="STOPPED")["taskArns"] == [tasks[0]]


def test_list_tasks_paginates(server: Server, ecs: Any) -> None:
    """Unpatched: maxResults was ignored."""
    (a,) = server.seed("c1", 1)
    tasks = server.tasks("c1", a, None, 5)
    first = ecs.list_tasks(cluster="c1", maxResults=2)
    assert len(first["taskArns"]) == 2 and first.get("nextToken")
    collected = all_pages(ecs, "list_tasks", "taskArns", cluster="c1", PaginationConfig={"PageSize": 2})
    assert sorted(collected) == sorted(tasks) and len(collected) == 5
    assert error_code(ecs.list_tasks, cluster="c1", nextToken="not-a-token") == "InvalidParameterException"
    assert error_code(ecs.list_tasks, cluster="c1", maxResults=101) == "InvalidParameterException"


def test_list_tasks_matches_cluster_and_instance_exactly(server: Server, ecs: Any) -> None:
    """Unpatched: the cluster matched as a substring of the task ARN, so "c1" listed "c10"'s tasks."""
    (a,) = server.seed("c1", 1)
    (b,) = server.seed("c10", 1)
    mine = server.tasks("c1", a, None, 1)
    server.tasks("c10", b, None, 2)
    assert ecs.list_tasks(cluster="c1")["taskArns"] == mine
    assert ecs.list_tasks(cluster="c1", containerInstance=a.rsplit("/", 1)[-1])["taskArns"] == mine


def test_describe_tasks_does_not_advance_lifecycle(server: Server, ecs: Any) -> None:
    """Unpatched: each DescribeTasks moved lastStatus a step towards STOPPED."""
    (a,) = server.seed("c1", 1)
    (task,) = server.tasks("c1", a, "ecs-svc/1", 1)
    for _ in range(6):
        (got,) = ecs.describe_tasks(cluster="c1", tasks=[task])["tasks"]
        assert (got["lastStatus"], got["desiredStatus"]) == ("RUNNING", "RUNNING")
    assert running_count(ecs, "c1", a) == 1


def test_describe_tasks_reports_missing_tasks_and_stays_in_its_cluster(server: Server, ecs: Any) -> None:
    """Unpatched: failures were always empty (an unknown task was silently left out), and a task
    of any cluster matched, even by a substring of its id."""
    (a,) = server.seed("c1", 1)
    (b,) = server.seed("c2", 1)
    (mine,) = server.tasks("c1", a, None, 1)
    (theirs,) = server.tasks("c2", b, None, 1)
    unknown = mine.rsplit("/", 1)[0] + "/00000000000000000000000000000000"
    answer = ecs.describe_tasks(cluster="c1", tasks=[mine, theirs, unknown, mine.rsplit("/", 1)[-1][:8]])
    assert [t["taskArn"] for t in answer["tasks"]] == [mine]
    assert [(f["arn"], f["reason"]) for f in answer["failures"]] == [
        (theirs, "MISSING"),
        (unknown, "MISSING"),
        (mine.rsplit("/", 1)[-1][:8], "MISSING"),
    ]
    by_id = ecs.describe_tasks(cluster="c1", tasks=[mine.rsplit("/", 1)[-1]])
    assert [t["taskArn"] for t in by_id["tasks"]] == [mine] and by_id["failures"] == []


def test_describe_tasks_takes_1_to_100_tasks(server: Server, ecs: Any) -> None:
    """Unpatched: any number was accepted."""
    (a,) = server.seed("c1", 1)
    (task,) = server.tasks("c1", a, None, 1)
    assert error_code(ecs.describe_tasks, cluster="c1", tasks=[task] * 101) == "InvalidParameterException"
    assert error_code(ecs.describe_tasks, cluster="c1", tasks=[]) == "InvalidParameterException"
    assert len(ecs.describe_tasks(cluster="c1", tasks=[task] * 100)["tasks"]) == 1


# --- ListContainerInstances --------------------------------------------------------------


def test_list_container_instances_by_status_pages_through_every_one(server: Server, ecs: Any) -> None:
    """Unpatched: maxResults and nextToken were ignored (every instance in one answer)."""
    arns = server.seed("c1", 7)
    server.seed("c2", 2)
    draining = arns[1:6]
    for arn in draining:
        ecs.update_container_instances_state(cluster="c1", containerInstances=[arn], status="DRAINING")
    first = ecs.list_container_instances(cluster="c1", status="DRAINING", maxResults=2)
    assert len(first["containerInstanceArns"]) == 2 and first.get("nextToken")
    pages = list(
        ecs.get_paginator("list_container_instances").paginate(
            cluster="c1", status="DRAINING", PaginationConfig={"PageSize": 2}
        )
    )
    collected = [arn for page in pages for arn in page["containerInstanceArns"]]
    assert len(pages) == 3 and len(collected) == 5
    assert sorted(collected) == sorted(draining)
    active = all_pages(ecs, "list_container_instances", "containerInstanceArns", cluster="c1", status="ACTIVE")
    assert sorted(active) == sorted([arns[0], arns[6]])
    everyone = ecs.list_container_instances(cluster="c1")
    assert sorted(everyone["containerInstanceArns"]) == sorted(arns) and "nextToken" not in everyone


def test_list_container_instances_default_page_is_100(server: Server, ecs: Any) -> None:
    server.seed("c1", 101)
    first = ecs.list_container_instances(cluster="c1")
    assert len(first["containerInstanceArns"]) == 100
    second = ecs.list_container_instances(cluster="c1", nextToken=first["nextToken"])
    assert len(second["containerInstanceArns"]) == 1 and "nextToken" not in second


def test_list_container_instances_pages_survive_status_changes_between_pages(server: Server, ecs: Any) -> None:
    arns = server.seed("c1", 4)
    for arn in arns:
        ecs.update_container_instances_state(cluster="c1", containerInstances=[arn], status="DRAINING")
    first = ecs.list_container_instances(cluster="c1", status="DRAINING", maxResults=2)
    # One instance of the first page goes back to ACTIVE: the rest of the listing neither
    # repeats nor skips the instances still draining.
    ecs.update_container_instances_state(
        cluster="c1", containerInstances=[first["containerInstanceArns"][0]], status="ACTIVE"
    )
    rest = ecs.list_container_instances(cluster="c1", status="DRAINING", nextToken=first["nextToken"])
    seen = first["containerInstanceArns"] + rest["containerInstanceArns"]
    assert sorted(seen) == sorted(arns) and len(set(seen)) == 4


def test_list_container_instances_checks_cluster_status_and_page_arguments(server: Server, ecs: Any) -> None:
    """Unpatched: an unknown cluster answered an empty list; any status and page arguments were
    accepted."""
    server.seed("c1", 1)
    assert error_code(ecs.list_container_instances, cluster="nope") == "ClusterNotFoundException"
    assert error_code(ecs.list_container_instances) == "ClusterNotFoundException"  # no "default" cluster
    for bad in ("draining", "INACTIVE", "STOPPED"):
        assert error_code(ecs.list_container_instances, cluster="c1", status=bad) == "InvalidParameterException"
    for bad in (0, 101):
        assert error_code(ecs.list_container_instances, cluster="c1", maxResults=bad) == "InvalidParameterException"
    assert error_code(ecs.list_container_instances, cluster="c1", nextToken="bogus!") == "InvalidParameterException"
    tasks_token = "eyJzY29wZSI6Ikxpc3RUYXNrcyIsImFmdGVyIjpbIngiXX0="  # a ListTasks token
    assert error_code(ecs.list_container_instances, cluster="c1", nextToken=tasks_token) == "InvalidParameterException"


# --- cluster tags (unpatched) ------------------------------------------------------------


def cluster_tags(ecs: Any, arn: str) -> dict[str, str]:
    return {t["key"]: t["value"] for t in ecs.list_tags_for_resource(resourceArn=arn)["tags"]}


def test_cluster_tags_round_trip_through_tag_untag_list_and_describe(server: Server, ecs: Any) -> None:
    """Not patched: moto 5.2.5 already tags clusters as ECS documents it. `fleet pause`, `resume`
    and `limit` write these tags and `fleet status` reads them back through DescribeClusters."""
    server.seed("c1", 1, tags={"keep": "1"})
    arn = ecs.describe_clusters(clusters=["c1"])["clusters"][0]["clusterArn"]
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "br-update.paused", "value": "true"}])
    assert cluster_tags(ecs, arn) == {"keep": "1", "br-update.paused": "true"}
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "br-update.paused", "value": "false"}])
    assert cluster_tags(ecs, arn) == {"keep": "1", "br-update.paused": "false"}, "a second tag overwrites"
    described = ecs.describe_clusters(clusters=["c1"], include=["TAGS"])["clusters"][0]
    assert {t["key"]: t["value"] for t in described["tags"]} == cluster_tags(ecs, arn)
    assert not ecs.describe_clusters(clusters=["c1"])["clusters"][0].get("tags"), "tags only when asked for"
    ecs.untag_resource(resourceArn=arn, tagKeys=["br-update.paused"])
    ecs.untag_resource(resourceArn=arn, tagKeys=["never-set"])
    assert cluster_tags(ecs, arn) == {"keep": "1"}, "untagging removes the key; a missing key is no error"


def test_cluster_tags_of_an_unknown_cluster_are_cluster_not_found(server: Server, ecs: Any) -> None:
    server.seed("c1", 1)
    missing = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/nope"
    assert error_code(ecs.tag_resource, resourceArn=missing, tags=[{"key": "k", "value": "v"}]) == "ClusterNotFoundException"
    assert error_code(ecs.untag_resource, resourceArn=missing, tagKeys=["k"]) == "ClusterNotFoundException"
    assert error_code(ecs.list_tags_for_resource, resourceArn=missing) == "ClusterNotFoundException"
    answer = ecs.describe_clusters(clusters=["nope"], include=["TAGS"])
    assert answer["clusters"] == [] and answer["failures"] == [{"arn": missing, "reason": "MISSING"}]


# --- container instance health ------------------------------------------------------------

HEALTH = "CONTAINER_INSTANCE_HEALTH"


def health_of(ecs: Any, cluster: str, arns: list[str], include: list[str] | None = None) -> dict[str, Any]:
    """healthStatus by instance ARN (None where the answer has none)."""
    kwargs = {} if include is None else {"include": include}
    described = ecs.describe_container_instances(cluster=cluster, containerInstances=arns, **kwargs)
    return {d["containerInstanceArn"]: d.get("healthStatus") for d in described["containerInstances"]}


def test_describe_container_instances_reports_health_only_when_asked(server: Server, ecs: Any) -> None:
    """Unpatched: no healthStatus, even with include CONTAINER_INSTANCE_HEALTH."""
    a, b = server.seed("c1", 2)
    assert health_of(ecs, "c1", [a, b]) == {a: None, b: None}
    assert health_of(ecs, "c1", [a], include=["TAGS"]) == {a: None}
    got = health_of(ecs, "c1", [a, b], include=[HEALTH, "TAGS"])
    for arn in (a, b):
        status = got[arn]
        assert status["overallStatus"] == "OK", status
        (detail,) = status["details"]
        assert (detail["type"], detail["status"]) == ("CONTAINER_RUNTIME", "OK")
        assert "statusReason" not in detail
        # Real timestamps in UTC, the check as if just run: a zone mix-up is hours off.
        assert detail["lastStatusChange"] <= detail["lastUpdated"]
        assert abs(detail["lastUpdated"].timestamp() - time.time()) < 3600, detail


def test_responses_without_include_carry_no_health(server: Server, ecs: Any) -> None:
    a, b = server.seed("c1", 2)
    server.ok("POST", "/_harness/instance-health", {"cluster": "c1", "instance": a, "overall": "IMPAIRED"})
    updated = ecs.update_container_instances_state(cluster="c1", containerInstances=[a], status="DRAINING")
    assert "healthStatus" not in updated["containerInstances"][0]
    gone = ecs.deregister_container_instance(cluster="c1", containerInstance=b)["containerInstance"]
    assert "healthStatus" not in gone


def test_instance_health_route_impairs_an_instance_until_it_is_cleared(server: Server, ecs: Any) -> None:
    a, b = server.seed("c1", 2)
    body = {"cluster": "c1", "instance": a, "overall": "IMPAIRED", "type": "CONTAINER_RUNTIME", "reason": "docker down"}
    answer = server.ok("POST", "/_harness/instance-health", body)
    assert answer == {"arn": a, "overall": "IMPAIRED", "type": "CONTAINER_RUNTIME", "reason": "docker down"}
    got = health_of(ecs, "c1", [a, b], include=[HEALTH])
    assert got[a]["overallStatus"] == "IMPAIRED"
    (detail,) = got[a]["details"]
    assert (detail["type"], detail["status"], detail["statusReason"]) == ("CONTAINER_RUNTIME", "IMPAIRED", "docker down")
    assert got[b]["overallStatus"] == "OK", "only the instance named"
    assert health_of(ecs, "c1", [a]) == {a: None}, "still only when asked"

    # The same status again, with another reason: the status has not changed since.
    server.ok("POST", "/_harness/instance-health", {**body, "reason": "still down"})
    (again,) = health_of(ecs, "c1", [a], include=[HEALTH])[a]["details"]
    assert again["statusReason"] == "still down"
    assert again["lastStatusChange"] == detail["lastStatusChange"]

    short_id = a.rsplit("/", 1)[-1]
    server.ok("POST", "/_harness/instance-health", {"cluster": "c1", "instance": short_id, "overall": "OK"})
    cleared = health_of(ecs, "c1", [a], include=[HEALTH])[a]
    assert cleared["overallStatus"] == "OK"
    (ok_detail,) = cleared["details"]
    assert (ok_detail["type"], ok_detail["status"]) == ("CONTAINER_RUNTIME", "OK") and "statusReason" not in ok_detail
    assert ok_detail["lastStatusChange"] >= detail["lastStatusChange"]

    server.ok("POST", "/_harness/instance-health", {"cluster": "c1", "instance": a, "overall": "INITIALIZING", "type": "DAEMON"})
    (daemon,) = health_of(ecs, "c1", [a], include=[HEALTH])[a]["details"]
    assert (daemon["type"], daemon["status"]) == ("DAEMON", "INITIALIZING")


def test_instance_health_route_rejects_bad_input(server: Server) -> None:
    (a,) = server.seed("c1", 1)
    route = "/_harness/instance-health"
    assert server.call("POST", route, {"cluster": "c1", "instance": a})[0] == 400
    assert server.call("POST", route, {"cluster": "c1", "instance": a, "overall": "SICK"})[0] == 400
    assert server.call("POST", route, {"cluster": "c1", "instance": a, "overall": "OK", "type": "DISK"})[0] == 400
    assert server.call("POST", route, {"cluster": "c1", "instance": "nope", "overall": "OK"})[0] == 404
    assert server.call("POST", route, {"cluster": "nope", "instance": a, "overall": "OK"})[0] == 404
    assert server.call("GET", route)[0] == 405


# --- harness routes ----------------------------------------------------------------------


def test_seed_creates_cluster_instances_and_tags(server: Server, ecs: Any) -> None:
    answer = server.ok("POST", "/_harness/seed", {"cluster": "c1", "instances": 6, "tags": {"k": "v"}})
    cluster_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/c1"
    assert answer["cluster_arn"] == cluster_arn
    assert len(answer["instances"]) == len(set(answer["instances"])) == 6
    assert sorted(ecs.list_container_instances(cluster="c1")["containerInstanceArns"]) == sorted(answer["instances"])
    described = ecs.describe_container_instances(cluster="c1", containerInstances=answer["instances"])["containerInstances"]
    assert {d["status"] for d in described} == {"ACTIVE"}
    assert all({"name": "ecs.os-type", "value": "linux"} in d["attributes"] for d in described)
    assert ecs.list_tags_for_resource(resourceArn=cluster_arn)["tags"] == [{"key": "k", "value": "v"}]


def test_seed_rejects_bad_input(server: Server) -> None:
    assert server.call("POST", "/_harness/seed", {"instances": 2})[0] == 400
    assert server.call("POST", "/_harness/seed", {"cluster": "c1", "instances": "2"})[0] == 400
    assert server.call("POST", "/_harness/nope", {})[0] == 404
    assert server.call("GET", "/_harness/seed")[0] == 405


def test_tasks_route_starts_tasks_on_an_instance(server: Server, ecs: Any) -> None:
    a, b = server.seed("c1", 2)
    service = server.tasks("c1", a, "ecs-svc/123", 2)
    standalone = server.tasks("c1", a, None, 1)
    assert len(service) == 2 and len(standalone) == 1
    assert running_count(ecs, "c1", a) == 3 and running_count(ecs, "c1", b) == 0
    details = {t["taskArn"]: t for t in ecs.describe_tasks(cluster="c1", tasks=service + standalone)["tasks"]}
    assert {details[t]["startedBy"] for t in service} == {"ecs-svc/123"}
    assert {details[t]["group"] for t in service} == {"service:harness-service"}
    assert details[standalone[0]].get("startedBy", "") == ""
    assert {d["containerInstanceArn"] for d in details.values()} == {a}
    assert server.call("POST", "/_harness/tasks", {"cluster": "c1", "instance": "nope", "count": 1})[0] == 404


def test_state_route_reports_instances_attributes_and_tasks(server: Server, ecs: Any) -> None:
    a, b = server.seed("c1", 2)
    put(ecs, "c1", a, "lease", "holder:1")
    put(ecs, "c1", a, "flag")
    svc = server.tasks("c1", a, "ecs-svc/9", 1)
    ecs.update_container_instances_state(cluster="c1", containerInstances=[b], status="DRAINING")
    state = server.ok("GET", "/_harness/state?cluster=c1")
    by_arn = {i["arn"]: i for i in state["instances"]}
    assert set(by_arn) == {a, b}
    assert by_arn[a]["status"] == "ACTIVE" and by_arn[b]["status"] == "DRAINING"
    assert by_arn[a]["attributes"]["lease"] == "holder:1" and by_arn[a]["attributes"]["flag"] is None
    assert by_arn[a]["attributes"]["ecs.os-type"] == "linux"
    assert by_arn[a]["running_tasks"] == 1 and by_arn[b]["running_tasks"] == 0
    assert by_arn[a]["tasks"] == [
        {"arn": svc[0], "started_by": "ecs-svc/9", "desired_status": "RUNNING", "last_status": "RUNNING"}
    ]
    assert server.call("GET", "/_harness/state?cluster=nope")[0] == 404


def test_task_status_route_makes_a_task_stopping_then_stopped(server: Server, ecs: Any) -> None:
    (a,) = server.seed("c1", 1)
    task, other = server.tasks("c1", a, "ecs-svc/1", 2)
    answer = server.ok("POST", "/_harness/task-status", {"cluster": "c1", "task": task, "last_status": "RUNNING"})
    assert answer == {"arn": task, "desired_status": "STOPPED", "last_status": "RUNNING"}
    assert task_statuses(ecs, "c1", [task, other]) == {task: ("STOPPED", "RUNNING"), other: ("RUNNING", "RUNNING")}
    assert running_count(ecs, "c1", a) == 1, "runningTasksCount counts desired RUNNING only"
    assert ecs.list_tasks(cluster="c1", containerInstance=a, desiredStatus="STOPPED")["taskArns"] == [task]
    task_id = task.rsplit("/", 1)[-1]
    server.ok("POST", "/_harness/task-status", {"cluster": "c1", "task": task_id, "last_status": "DEPROVISIONING"})
    assert task_statuses(ecs, "c1", [task]) == {task: ("STOPPED", "DEPROVISIONING")}
    server.ok("POST", "/_harness/task-status", {"cluster": "c1", "task": task, "last_status": "STOPPED"})
    assert task_statuses(ecs, "c1", [task]) == {task: ("STOPPED", "STOPPED")}
    assert running_count(ecs, "c1", a) == 1, "stopped once, counted once"
    # A running task can be stopped outright, too.
    server.ok("POST", "/_harness/task-status", {"cluster": "c1", "task": other, "last_status": "STOPPED"})
    assert task_statuses(ecs, "c1", [other]) == {other: ("STOPPED", "STOPPED")}
    assert running_count(ecs, "c1", a) == 0
    assert server.call("POST", "/_harness/task-status", {"cluster": "c1", "task": task, "last_status": "RUNNING"})[0] == 400
    assert server.call("POST", "/_harness/task-status", {"cluster": "c1", "task": task, "last_status": "PENDING"})[0] == 400
    assert server.call("POST", "/_harness/task-status", {"cluster": "c1", "task": "nope", "last_status": "STOPPED"})[0] == 404


def test_tags_route_sets_and_removes_cluster_tags(server: Server, ecs: Any) -> None:
    server.seed("c1", 1, tags={"keep": "1", "drop": "2"})
    server.ok("POST", "/_harness/tags", {"cluster": "c1", "tags": {"keep": "changed", "new": "3"}, "remove": ["drop"]})
    tags = ecs.list_tags_for_resource(resourceArn=f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/c1")["tags"]
    assert {t["key"]: t["value"] for t in tags} == {"keep": "changed", "new": "3"}


def test_throttling_every_nth_call_as_boto3_sees_it(server: Server, ecs: Any) -> None:
    server.seed("c1", 1)
    assert server.ok("POST", "/_harness/faults", {"throttle_every": 3})["throttle_every"] == 3
    outcomes = []
    for _ in range(6):
        try:
            ecs.list_attributes(cluster="c1", targetType=CI, attributeName="lease")
            outcomes.append("ok")
        except ClientError as err:
            assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 400
            assert err.response["Error"]["Message"] == "Rate exceeded"
            outcomes.append(err.response["Error"]["Code"])
    assert outcomes == ["ok", "ok", "ThrottlingException"] * 2
    # A client that retries throttling (as the agent's SDK does) gets through every time.
    retrying = server.ecs(attempts=3)
    retries = [
        retrying.list_attributes(cluster="c1", targetType=CI)["ResponseMetadata"]["RetryAttempts"] for _ in range(4)
    ]
    assert sum(retries) >= 1
    server.ok("POST", "/_harness/faults", {"throttle_every": 0})
    for _ in range(5):
        ecs.list_attributes(cluster="c1", targetType=CI)


def test_unavailable_answers_503_server_exception(server: Server, ecs: Any) -> None:
    server.seed("c1", 1)
    server.ok("POST", "/_harness/faults", {"unavailable": True})
    with pytest.raises(ClientError) as caught:
        ecs.list_attributes(cluster="c1", targetType=CI)
    assert caught.value.response["Error"]["Code"] == "ServerException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    faults = server.ok("POST", "/_harness/faults", {"unavailable": False})
    assert faults == {"throttle_every": 0, "unavailable": False, "latency_ms": 0, "drain_delay_ms": 0, "stop_delay_ms": 0}
    ecs.list_attributes(cluster="c1", targetType=CI)


def test_latency_delays_ecs_calls(server: Server, ecs: Any) -> None:
    server.seed("c1", 1)
    server.ok("POST", "/_harness/faults", {"latency_ms": 400})
    started = time.monotonic()
    ecs.list_attributes(cluster="c1", targetType=CI)
    assert time.monotonic() - started >= 0.4


def test_faults_missing_fields_stay_unchanged(server: Server) -> None:
    server.ok("POST", "/_harness/faults", {"throttle_every": 7, "latency_ms": 5, "drain_delay_ms": 50, "stop_delay_ms": 60})
    faults = server.ok("POST", "/_harness/faults", {"unavailable": True})
    assert faults == {"throttle_every": 7, "unavailable": True, "latency_ms": 5, "drain_delay_ms": 50, "stop_delay_ms": 60}
    assert server.call("POST", "/_harness/faults", {"latency_ms": -1})[0] == 400
    assert server.call("POST", "/_harness/faults", {"unavailable": "yes"})[0] == 400
    server.ok("POST", "/_harness/reset")
    assert server.ok("POST", "/_harness/faults", {}) == {
        "throttle_every": 0,
        "unavailable": False,
        "latency_ms": 0,
        "drain_delay_ms": 0,
        "stop_delay_ms": 0,
    }


def test_calls_counter_counts_ecs_requests_including_failed(server: Server, ecs: Any) -> None:
    (a,) = server.seed("c1", 1)
    server.ok("POST", "/_harness/calls/reset")
    put(ecs, "c1", a, "lease", "x")
    ecs.list_attributes(cluster="c1", targetType=CI, attributeName="lease")
    error_code(ecs.put_attributes, cluster="c1", attributes=[{"name": "bad=name", "targetId": a}])
    server.ok("POST", "/_harness/faults", {"throttle_every": 1})
    error_code(ecs.list_attributes, cluster="c1", targetType=CI)
    calls = server.ok("GET", "/_harness/calls")
    assert calls == {"total": 4, "by_operation": {"PutAttributes": 2, "ListAttributes": 2}}
    assert server.ok("POST", "/_harness/calls/reset") == {"total": 0, "by_operation": {}}
    assert server.ok("GET", "/_harness/calls") == {"total": 0, "by_operation": {}}


def test_call_log_names_the_signing_key_and_the_attributes_written(server: Server, ecs: Any) -> None:
    (a,) = server.seed("c1", 1)
    server.ok("POST", "/_harness/calls/reset")
    other = server.ecs(access_key="host-b")
    put(ecs, "c1", a, "br-update.lease", "v1:c:1:2:t:1.1.0")
    other.list_attributes(cluster="c1", targetType=CI, attributeName="br-update.lease")
    other.delete_attributes(cluster="c1", attributes=[{"name": "br-update.lease", "targetId": a}])
    calls = server.ok("GET", "/_harness/call-log")["calls"]
    assert calls == [
        {
            "key": "testing",
            "operation": "PutAttributes",
            "attributes": [{"name": "br-update.lease", "value": "v1:c:1:2:t:1.1.0"}],
        },
        {"key": "host-b", "operation": "ListAttributes"},
        {"key": "host-b", "operation": "DeleteAttributes", "attributes": [{"name": "br-update.lease", "value": None}]},
    ]
    # The body read for the log still reached moto: the write landed, and so did the deletion.
    assert "br-update.lease" not in {x["name"] for x in describe(ecs, "c1", a).get("attributes", [])}
    server.ok("POST", "/_harness/calls/reset")
    assert server.ok("GET", "/_harness/call-log") == {"calls": []}


def test_reset_wipes_everything(server: Server, ecs: Any) -> None:
    server.seed("c1", 2)
    server.ok("POST", "/_harness/faults", {"latency_ms": 1, "drain_delay_ms": 10, "stop_delay_ms": 10})
    ecs.list_clusters()
    server.ok("POST", "/_harness/reset")
    assert ecs.list_clusters()["clusterArns"] == []
    assert server.ok("GET", "/_harness/calls") == {"total": 1, "by_operation": {"ListClusters": 1}}
    settings = server.ok("POST", "/_harness/faults", {})
    assert settings["drain_delay_ms"] == 0 and settings["stop_delay_ms"] == 0


# --- concurrency and the process itself --------------------------------------------------


def test_sixteen_threads_put_and_list_without_error(server: Server) -> None:
    threads_n, rounds = 16, 25
    arns = server.seed("c1", threads_n)
    clients = [server.ecs() for _ in range(threads_n)]
    errors: list[str] = []
    start = threading.Barrier(threads_n)

    def worker(i: int) -> None:
        start.wait()
        for r in range(rounds):
            try:
                put(clients[i], "c1", arns[i], "lease", f"owner-{i}:{r}")
                listed = clients[i].list_attributes(cluster="c1", targetType=CI, attributeName="lease")["attributes"]
                if f"owner-{i}:{r}" not in {x["value"] for x in listed}:
                    errors.append(f"thread {i} round {r}: own write not visible")
            except Exception as err:  # every failure counts; the assertion below reports them
                errors.append(f"thread {i} round {r}: {err!r}")

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    began = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    elapsed = time.monotonic() - began
    assert errors == []
    final = server.ecs().list_attributes(cluster="c1", targetType=CI, attributeName="lease")["attributes"]
    assert names_by_target(final) == {arns[i]: {"lease": f"owner-{i}:{rounds - 1}"} for i in range(threads_n)}
    print(f"16 threads put+list: {2 * threads_n * rounds} requests in {elapsed:.2f}s = {2 * threads_n * rounds / elapsed:.0f} req/s")


def test_patches_refuse_another_moto_version() -> None:
    fake_version = "import moto, sys; moto.__version__ = '5.2.4'; sys.path.insert(0, sys.argv[1]); import ecs_patches"
    done = subprocess.run([sys.executable, "-c", fake_version, HERE], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "targets moto 5.2.5 but moto 5.2.4 is installed" in done.stderr


def test_server_exits_when_stdin_closes_and_on_sigterm(server: Server) -> None:
    first, port_a = start_server()
    second, port_b = start_server()
    assert len({port_a, port_b, server.port}) == 3
    assert stop_server(first) == 0
    assert first.stdout.read() == ""  # nothing after the PORT line
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    second.stdin.close()
