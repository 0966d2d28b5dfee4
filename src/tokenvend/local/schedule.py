"""The template's Schedule events, fired as EventBridge would: every `rate(...)` interval (or
every `--refresh-every` seconds), each firing an asynchronous invocation of its function with
EventBridge's scheduled event. A run still under way is not started again on top of itself.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..template import Stack, TemplateError
from .functions import LocalFunction
from .log import log

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> int | None:
    """Seconds between firings of `rate(N unit)`; None for anything else (cron)."""
    match = _RATE.match(expression.strip())
    if match is None:
        return None
    value, unit = int(match.group(1)), match.group(2)
    if value < 1 or (value == 1) != (not unit.endswith("s")):
        raise TemplateError(f"{expression!r}: EventBridge wants rate(1 minute), rate(N minutes)")
    return value * _UNIT[unit.rstrip("s")]


@dataclass(frozen=True)
class Schedule:
    function: LocalFunction
    rule_name: str
    expression: str
    interval: float  # seconds


def schedules_of(
    stack: Stack, functions: Mapping[str, LocalFunction], every: float | None
) -> list[Schedule]:
    """The enabled Schedule events of every function; `every` replaces their rates."""
    found = []
    for function in functions.values():
        for event_name, props in stack.function_events(function.logical_id, "Schedule"):
            if props.get("Enabled", True) in (False, "false", "False"):
                continue
            expression = str(props.get("Schedule", ""))
            seconds = rate_seconds(expression)
            if seconds is None and every is None:
                log(
                    "schedule not fired locally: only rate() expressions are",
                    level="WARNING",
                    function_name=function.name,
                    schedule=expression,
                )
                continue
            rule = str(props.get("Name") or f"{stack.name}-{function.logical_id}-{event_name}")
            interval = every if every is not None else float(seconds or 0)
            found.append(Schedule(function, rule, expression, interval))
    return found


def scheduled_event(rule_name: str, *, region: str, account_id: str) -> dict[str, Any]:
    """EventBridge's scheduled event (as in events/provider-schedule.json)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account_id,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{account_id}:rule/{rule_name}"],
        "detail": {},
    }


class Scheduler:
    def __init__(self, schedules: list[Schedule], *, region: str, account_id: str) -> None:
        self._schedules = schedules
        self._region = region
        self._account_id = account_id
        self._stop = threading.Event()
        self._running: dict[str, threading.Thread] = {}
        self._thread = threading.Thread(target=self._loop, name="schedule", daemon=True)

    def start(self) -> Scheduler:
        if self._schedules:
            self._thread.start()
        return self

    def stop(self, wait: float = 5.0) -> None:
        """Stop firing; give runs under way up to `wait` seconds to finish."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=wait)
        give_up = time.monotonic() + wait
        for thread in list(self._running.values()):
            thread.join(timeout=max(0.0, give_up - time.monotonic()))

    def _loop(self) -> None:
        started = time.monotonic()
        due = {schedule.rule_name: started + schedule.interval for schedule in self._schedules}
        while not self._stop.is_set():
            now = time.monotonic()
            for schedule in self._schedules:
                if due[schedule.rule_name] > now:
                    continue
                due[schedule.rule_name] += schedule.interval
                if due[schedule.rule_name] <= now:  # fell behind: no burst of catch-up runs
                    due[schedule.rule_name] = now + schedule.interval
                self._fire(schedule)
            self._stop.wait(max(0.01, min(due.values()) - time.monotonic()))

    def _fire(self, schedule: Schedule) -> None:
        running = self._running.get(schedule.rule_name)
        if running is not None and running.is_alive():
            log(
                "schedule skipped: the previous run is still under way",
                level="WARNING",
                function_name=schedule.function.name,
                rule=schedule.rule_name,
            )
            return
        event = scheduled_event(
            schedule.rule_name, region=self._region, account_id=self._account_id
        )
        self._running[schedule.rule_name] = schedule.function.invoke_async(event)
