"""A task's way from "ECS decided to stop it" to "it has stopped", which moto does in one step.

In ECS the two are apart: when the scheduler replaces a service task (a drain, a deployment) it
sets the task's desired status to STOPPED at once, and the task drops out of the instance's
`runningTasksCount` (which counts desired RUNNING), but the task keeps running, and serving,
through its load balancer's deregistration delay (300 s by default) and its containers' stop
timeout; its last status goes DEACTIVATING, STOPPING, DEPROVISIONING and only then STOPPED.
moto's StopTask sets both statuses to STOPPED together. These helpers split it.
"""

from __future__ import annotations

from typing import Any

STOPPED = "STOPPED"
#: The last statuses a task passes through after its desired status turned STOPPED.
LAST_STATUSES_WHILE_STOPPING = ("RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING")


def begin_stop(backend: Any, cluster_name: str, task: Any, reason: str) -> bool:
    """Desired status STOPPED (its resources and its place in `runningTasksCount` given back),
    last status unchanged; False if ECS had already decided to stop it."""
    if task.desired_status == STOPPED:
        return False
    last = task.last_status
    # moto's StopTask does the bookkeeping (instance resources, counts) and sets both statuses.
    backend.stop_task(cluster_name, task.task_arn, reason)
    task.last_status = last
    return True


def finish_stop(task: Any) -> bool:
    """Last status STOPPED for a task ECS decided to stop; False if there was nothing to finish."""
    if task.desired_status != STOPPED or task.last_status == STOPPED:
        return False
    task.last_status = STOPPED
    return True
