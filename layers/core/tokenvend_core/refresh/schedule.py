"""The scheduled run: which connections are due (nearest expiry first), which items are
gone, what is queued for another run (fan-out), a bounded pool of threads that refreshes
the rest inside the invocation's time budget, and the health gauges the alarms watch."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tokenvend_core import audit
from tokenvend_core.aws.store import ConnectionState
from tokenvend_core.errors import TokenVendError
from tokenvend_core.names import CONNECTION_RE
from tokenvend_core.need import Need
from tokenvend_core.observability import MetricUnit, emit, emit_for_connection, logger

if TYPE_CHECKING:
    from tokenvend_core.refresh.refresher import Refresher


class Fanout(Protocol):
    """Where a scheduled run queues what it does not refresh itself (fanout.SqsFanout)."""

    def send(self, bodies: list[dict[str, Any]]) -> int: ...


@dataclass(slots=True)
class ScheduleReport:
    connections: int = 0
    due: int = 0
    refreshed: int = 0
    failed: int = 0
    skipped: int = 0
    deferred: int = 0
    removed: int = 0
    fanned_out: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


Due = tuple[float, str, Need]  # the order (expiry; 0 for none yet), the connection, its need


@dataclass(frozen=True, slots=True)
class Survey:
    """What a scheduled run found when it started: the provider's secrets (connection ->
    version), its items (connection -> state), and the time."""

    versions: dict[str, str | None]
    states: dict[str, ConnectionState]
    now: float


def run_schedule(refresher: Refresher, remaining_ms: Callable[[], int]) -> ScheduleReport:
    """Refresh every connection whose token would fall below the refresh lead before the
    next run, nearest expiry first, with bounded concurrency, inside the time budget."""
    report = ScheduleReport()
    now = refresher._clock()
    versions = refresher.secrets.list(refresher.provider)
    states = {state.connection: state for state in refresher.tokens.connections(refresher.provider)}
    survey = Survey(versions, states, now)
    report.connections = len(versions)
    due = _plan(refresher, survey, report)
    report.removed = _remove_gone(refresher, survey)
    due.sort()
    report.due = len(due)
    threshold = refresher.settings.fanout_threshold
    if refresher.fanout is not None and len(due) > threshold:
        # More than one run refreshes: keep the nearest expiries, queue the rest.
        report.fanned_out = _fan_out(refresher, due[threshold:])
        due = due[:threshold]
    run_bounded(refresher, due, remaining_ms, report)
    logger.info(
        "scheduled refresh finished", extra={"provider": refresher.provider, **report.as_dict()}
    )
    emit("ScheduleDeferred", report.deferred)
    _report_health(refresher, survey)
    return report


def _plan(refresher: Refresher, survey: Survey, report: ScheduleReport) -> list[Due]:
    """The connections this run refreshes, unordered: no token yet, a token that would fall
    below the refresh lead before the next run, or a secret that changed since."""
    now = survey.now
    horizon = refresher.settings.refresh_lead + refresher.settings.schedule_interval
    due: list[Due] = []
    for connection, version in survey.versions.items():
        if not CONNECTION_RE.fullmatch(connection):
            report.skipped += 1
            continue
        state = survey.states.get(connection)
        need = Need(min_ttl=horizon)
        changed = False
        if state is not None:
            seen = state.error_secret_version if state.error_code else state.secret_version
            changed = bool(version and seen and version != seen)
            if state.leased(now) or (
                not changed and (state.error_permanent or state.next_attempt_at > now)
            ):
                report.skipped += 1  # being refreshed, failing for good, or backing off
                continue
        # The listing leaves the tokens themselves out: expires_at says whether there is one.
        if state is None or not state.expires_at:
            order = 0.0
        elif changed:
            order, need = float(state.expires_at), Need(newer_than=state.version)
        elif state.expires_at - now < horizon:
            order = float(state.expires_at)
        else:
            continue
        due.append((order, connection, need))
    return due


def _remove_gone(refresher: Refresher, survey: Survey) -> int:
    """Items whose secret is gone are deleted; those whose secret awaits deletion keep only
    what a restore needs. Returns how many were removed."""
    removed = 0
    awaiting_deletion = refresher.secrets.awaiting_deletion(refresher.provider)
    for connection, state in survey.states.items():
        if connection in survey.versions or state.leased(survey.now):
            continue
        if connection in awaiting_deletion:
            # Restorable: nothing serves its token any more, but a fallback refresh
            # token stays for the day the secret is restored.
            if state.expires_at or state.error_code:
                refresher.tokens.retire(refresher.provider, connection)
                removed += 1
            continue
        refresher.tokens.delete(refresher.provider, connection)
        removed += 1
    return removed


def _fan_out(refresher: Refresher, overflow: list[Due]) -> int:
    assert refresher.fanout is not None
    size = refresher.settings.fanout_batch
    bodies = [
        {
            "action": "refresh_batch",
            "connections": [
                {"connection": name, "min_ttl": need.min_ttl, "newer_than": need.newer_than}
                for _, name, need in overflow[start : start + size]
            ],
        }
        for start in range(0, len(overflow), size)
    ]
    try:
        refresher.fanout.send(bodies)
    except TokenVendError:
        logger.warning("could not queue the fan-out; the next run picks these up")
        return 0
    emit("ScheduleFannedOut", len(overflow))
    return len(overflow)


def refresh_batch(
    refresher: Refresher, items: list[tuple[str, Need]], remaining_ms: Callable[[], int]
) -> ScheduleReport:
    """A batch queued by a scheduled run's fan-out, refreshed like the run itself would.
    Each connection's need is checked again: one refreshed meanwhile costs nothing."""
    report = ScheduleReport(connections=len(items), due=len(items))
    run_bounded(refresher, [(0.0, name, need) for name, need in items], remaining_ms, report)
    return report


def run_bounded(
    refresher: Refresher,
    due: list[Due],
    remaining_ms: Callable[[], int],
    report: ScheduleReport,
) -> None:
    """The bounded pool: at most `schedule_concurrency` threads take the due connections in
    order, each with no wait on a lease another holds, until the time left would not cover
    one more attempt and the margin; what is left is counted as deferred."""
    budget_ms = (refresher.settings.schedule_margin + refresher.settings.attempt_deadline) * 1000
    lock = threading.Lock()
    queue = iter(due)
    done = {"refreshed": 0, "failed": 0}

    def worker() -> None:
        while True:
            with lock:
                if remaining_ms() <= budget_ms:
                    return
                item = next(queue, None)
            if item is None:
                return
            _, connection, need = item
            try:
                refresher.refresh(connection, need, wait=0)
                outcome = "refreshed"
            except TokenVendError as error:
                outcome = "failed"
                logger.warning(
                    "scheduled refresh of a connection failed",
                    extra={
                        **refresher.ids(connection),
                        "error_code": error.code,
                        "error_message": error.message,
                    },
                )
            except Exception:
                logger.exception("scheduled refresh crashed", extra=refresher.ids(connection))
                outcome = "failed"
            with lock:
                done[outcome] += 1

    workers = [
        threading.Thread(target=audit.carry(worker), name=f"refresh-{i}", daemon=True)
        for i in range(min(refresher.settings.schedule_concurrency, len(due)))
    ]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    report.refreshed, report.failed = done["refreshed"], done["failed"]
    report.deferred = report.due - report.refreshed - report.failed - report.fanned_out


def _report_health(refresher: Refresher, survey: Survey) -> None:
    """Gauges for the alarms, from the connections' state at the start of this run."""
    now = survey.now
    known = [state for name, state in survey.states.items() if name in survey.versions]
    permanent = [s for s in known if s.error_permanent]
    failing = [s for s in known if s.error_code and not s.error_permanent and s.failures >= 2]
    emit("PermanentErrorConnections", len(permanent))
    emit("FailingConnections", len(failing))
    if not refresher.spec.uses_refresh_token:
        return
    grants = {s.connection: s.refresh_expires_at for s in known if s.refresh_expires_at}
    for connection, expires_at in grants.items():
        emit_for_connection(
            "RefreshGrantRemaining",
            max(0, expires_at - now),
            MetricUnit.Seconds,
            provider=refresher.provider,
            connection=connection,
        )
    if grants:
        emit("RefreshGrantMinRemaining", max(0, min(grants.values()) - now), MetricUnit.Seconds)
