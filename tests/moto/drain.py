"""The ECS scheduler's part of draining, which moto leaves out.

Real ECS stops (and replaces elsewhere) the service tasks of a DRAINING instance and leaves
standalone tasks alone. Here the service tasks, recognised by a `startedBy` of `ecs-svc/...`,
are stopped after a delay the tests set at run time (0: within the UpdateContainerInstancesState
call itself, so a test sees the effect in its very next read). Replacements are not started:
the tests only look at the drained instance.

Stopping takes two steps, as in ECS (see stopping.py): after the drain delay the tasks' desired
status turns STOPPED, and after a further stop delay (deregistration delay plus stop timeout;
0: at once) their last status does. Re-activating the instance in between does not bring them
back; it only cancels a drain whose delay has not run out.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from stopping import begin_stop, finish_stop

log = logging.getLogger("moto-harness.drain")

#: The `stoppedReason` given to the tasks the scheduler stops.
STOP_REASON = "Container instance is draining; service task stopped by the scheduler"
SERVICE_PREFIX = "ecs-svc/"


class DrainScheduler:
    """Stops the service tasks of draining instances: desired STOPPED after `delay_ms`, last
    status STOPPED `stop_delay_ms` later."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self.delay_ms = 0
        self.stop_delay_ms = 0
        # Timers that finish stopping tasks: no status change cancels them, only a reset.
        self._finishing: list[threading.Timer] = []
        # One generation number per instance: a timer acts only if no later status change
        # (reactivation, a second drain, a reset) came after it was armed.
        self._generation: dict[tuple[str, str, str], int] = {}
        self._timers: dict[tuple[str, str, str], threading.Timer] = {}

    def status_changed(self, backend: Any, cluster_name: str, instance: Any, old: str) -> None:
        """React to `instance` having gone from `old` to its current status (called under the lock)."""
        key = (backend.account_id, backend.region_name, instance.container_instance_arn)
        generation = self._generation.get(key, 0) + 1
        self._generation[key] = generation
        pending = self._timers.pop(key, None)
        if pending is not None:
            pending.cancel()
            log.info("drain of %s cancelled: status is now %s", key[2], instance.status)
        if instance.status != "DRAINING" or old == "DRAINING":
            return
        if self.delay_ms <= 0:
            self._stop_service_tasks(backend, cluster_name, instance)
            return
        timer = threading.Timer(
            self.delay_ms / 1000.0,
            self._fire,
            args=(key, generation, backend, cluster_name, instance),
        )
        timer.daemon = True
        self._timers[key] = timer
        timer.start()
        log.info("drain of %s armed: service tasks stop in %d ms", key[2], self.delay_ms)

    def reset(self) -> None:
        """Forget every pending drain and go back to a zero delay."""
        with self._lock:
            for timer in [*self._timers.values(), *self._finishing]:
                timer.cancel()
            self._timers.clear()
            self._finishing.clear()
            self._generation.clear()
            self.delay_ms = 0
            self.stop_delay_ms = 0

    def _fire(self, key: tuple[str, str, str], generation: int, backend: Any, cluster_name: str, instance: Any) -> None:
        with self._lock:
            if self._generation.get(key) != generation:
                return
            self._timers.pop(key, None)
            still_registered = backend.container_instances.get(cluster_name, {}).get(instance.id) is instance
            if not still_registered or instance.status != "DRAINING":
                log.info("drain of %s dropped: instance no longer draining", key[2])
                return
            self._stop_service_tasks(backend, cluster_name, instance)

    def _stop_service_tasks(self, backend: Any, cluster_name: str, instance: Any) -> None:
        arn = instance.container_instance_arn
        doomed = [
            task
            for task in backend.tasks.get(cluster_name, {}).values()
            if task.container_instance_arn == arn
            and task.desired_status == "RUNNING"
            and (task.started_by or "").startswith(SERVICE_PREFIX)
        ]
        if self.stop_delay_ms <= 0:
            for task in doomed:
                backend.stop_task(cluster_name, task.task_arn, STOP_REASON)
            log.info("drain of %s: stopped %d service task(s)", arn, len(doomed))
            return
        for task in doomed:
            begin_stop(backend, cluster_name, task, STOP_REASON)
        timer = threading.Timer(self.stop_delay_ms / 1000.0, self._finish, args=(doomed,))
        timer.daemon = True
        self._finishing.append(timer)
        timer.start()
        log.info("drain of %s: %d service task(s) stopping for %d ms", arn, len(doomed), self.stop_delay_ms)

    def _finish(self, tasks: list[Any]) -> None:
        with self._lock:
            self._finishing = [t for t in self._finishing if t.is_alive() and t is not threading.current_thread()]
            finished = sum(1 for task in tasks if finish_stop(task))
            log.info("%d stopping task(s) stopped", finished)
