"""`tokenvend audit`: who got which token, read from the audit records (docs/security.md,
"Audit trail").

Every function writes one JSON record per decision into the stack's audit log group
(`/tokenvend/<stack>/audit`); this module finds the ones a question asks for:

- against a deployed stack, with a CloudWatch Logs Insights query (`insights_query`), started
  on the audit log group and polled for a bounded time;
- against `tokenvend local`, whose moto runs no Insights filter, by reading the group's
  events (FilterLogEvents) and applying the same filters here (`Filters.matches`).

Both ways the answer is the records themselves, newest first, filtered once more here
(`Filters.matches`): a record is shown only if it is one the question asked for.

Every value that goes into a query is checked first against a pattern that admits no quote,
backslash, pipe, whitespace or control character, so that none can leave its string
literal; the query builder checks again, whatever built the filters. A token read with
--token-file is hashed here and forgotten: only its fingerprint (the first 16 hex characters
of its SHA-256, as in the records) ever leaves this module.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from tokenvend_core.audit import fingerprint
from tokenvend_core.names import CONNECTION_RE, PROVIDER_RE
from tokenvend_core.principals import caller_identities

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_SINCE",
    "AuditInputError",
    "AuditQueryError",
    "Filters",
    "insights_query",
    "parse_caller",
    "parse_connection",
    "parse_fingerprint",
    "parse_limit",
    "parse_since",
    "query_insights",
    "read_local",
    "read_token_fingerprint",
    "render_table",
]

FINGERPRINT_HEX = 16  # the records' fingerprint: the first 16 hex characters of a SHA-256
DEFAULT_SINCE = "1d"
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000  # Logs Insights' largest `limit`
TOKEN_FILE_MAX_BYTES = 65536
QUERY_WAIT_SECONDS = 60.0  # how long a Logs Insights query may run before it is given up
LOCAL_MAX_PAGES = 1000  # FilterLogEvents pages read from the local stack, at most

# An IAM principal as API Gateway gives it in $context.identity.userArn: a user, a role, an
# assumed-role session, a federated user or an account's root. IAM names take letters,
# digits and + = , . @ _ - (and / in paths): never a quote, a backslash or a space.
_CALLER_RE = re.compile(
    r"arn:aws(?:-[a-z]+)*:(?:iam|sts)::\d{12}:"
    r"(?:root|(?:user|role|assumed-role|federated-user)/[A-Za-z0-9+=,.@_/-]{1,512})"
)
_ROLE_RE = re.compile(r"arn:(aws(?:-[a-z]+)*):iam::(\d{12}):role/([A-Za-z0-9+=,.@_/-]{1,512})")
_HEX_RE = re.compile(r"[0-9a-f]+")
_DURATION_RE = re.compile(r"(\d{1,6})([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# What a value in a query's string literal may hold: the union of the patterns above.
_QUERY_SAFE = re.compile(r"[A-Za-z0-9+=,.@_/:-]{1,600}")


class AuditInputError(ValueError):
    """Input that cannot be asked about (a malformed ARN, fingerprint, time, connection);
    the message is the one line to show, and holds no token."""


class AuditQueryError(RuntimeError):
    """The Logs Insights query failed or did not finish in time."""


# -- input ----------------------------------------------------------------------------------


def parse_connection(text: str) -> tuple[str, str]:
    """`dingtalk/corp-a` -> ("dingtalk", "corp-a")."""
    provider, slash, connection = text.partition("/")
    if not slash or not PROVIDER_RE.fullmatch(provider) or not CONNECTION_RE.fullmatch(connection):
        raise AuditInputError(
            "--connection must be PROVIDER/CONNECTION, e.g. dingtalk/corp-a (a lower-case "
            "provider name; a connection of 1 to 64 letters, digits, '.', '_' or '-')"
        )
    return provider, connection


def parse_caller(text: str) -> str:
    if not _CALLER_RE.fullmatch(text):
        raise AuditInputError(
            "--caller must be an IAM principal's ARN, e.g. arn:aws:iam::123456789012:user/app "
            "or arn:aws:sts::123456789012:assumed-role/ROLE/SESSION"
        )
    return text


def parse_fingerprint(text: str) -> str:
    """16 hex characters, or a whole SHA-256 (64) cut to its first 16; lower case."""
    value = text.strip().lower()
    if len(value) not in (FINGERPRINT_HEX, 64) or not _HEX_RE.fullmatch(value):
        raise AuditInputError(
            "--fingerprint must be 16 hex characters (a token's SHA-256, first 16) or a "
            "whole 64-character SHA-256"
        )
    return value[:FINGERPRINT_HEX]


def read_token_fingerprint(path: str, stdin: IO[Any]) -> str:
    """The fingerprint of the token in the file at `path` (`-`: standard input), its
    surrounding whitespace stripped. The token itself is neither kept nor returned, and no
    message names anything of the file's content."""
    source = "standard input" if path == "-" else path
    try:
        if path == "-":
            data = stdin.read(TOKEN_FILE_MAX_BYTES + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(TOKEN_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise AuditInputError(
            f"--token-file: cannot read {source}: {exc.strerror or type(exc).__name__}"
        ) from None
    if isinstance(data, str):  # a text stream given for standard input
        data = data.encode("utf-8")
    if len(data) > TOKEN_FILE_MAX_BYTES:
        raise AuditInputError(f"--token-file: {source} is larger than 64 KiB: not one token")
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise AuditInputError(f"--token-file: {source} is not UTF-8 text") from None
    token = _token_in(token)
    if not token:
        raise AuditInputError(f"--token-file: {source} holds no token")
    return fingerprint(token)  # as the functions write it into their records


def _token_in(text: str) -> str:
    """The token in what a leak usually looks like: the token alone, an Authorization
    header's value (`Bearer <token>`, with or without `Authorization:`), or the API's JSON
    answer (`tokenvend token --json`)."""
    if text.startswith("{"):
        with contextlib.suppress(ValueError):
            answer = json.loads(text)
            if isinstance(answer, dict) and isinstance(answer.get("access_token"), str):
                return str(answer["access_token"]).strip()
    found = re.fullmatch(r"(?:authorization:\s*)?bearer\s+(\S+)", text, flags=re.IGNORECASE)
    return found.group(1) if found else text


def parse_since(text: str, now: datetime) -> datetime:
    """`30m`, `1h`, `2d`, `1w` before `now`, or an ISO-8601 time (UTC unless it says)."""
    value = text.strip()
    found = _DURATION_RE.fullmatch(value)
    if found:
        amount, unit = int(found.group(1)), found.group(2)
        if amount == 0:
            raise AuditInputError("--since must be more than 0")
        try:
            moment = now - timedelta(seconds=amount * _SECONDS[unit])
        except OverflowError:
            moment = datetime.min.replace(tzinfo=UTC)
        if moment.year < 2000:
            raise AuditInputError(f"--since {value} is before any record could be")
        return moment
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise AuditInputError(
            "--since must be a duration such as 30m, 1h, 2d or 1w, or an ISO-8601 time such "
            "as 2026-11-30T10:00:00Z"
        ) from None
    if moment >= now:
        raise AuditInputError(f"--since {value} is not in the past")
    if moment.year < 2000:
        raise AuditInputError(f"--since {value} is before any record could be")
    return moment


def parse_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise AuditInputError(f"--limit must be a whole number from 1 to {MAX_LIMIT}")
    return value


# -- the question ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """What a question asks for; every field given must match a record exactly."""

    since: datetime
    until: datetime
    provider: str | None = None
    connection: str | None = None
    caller: str | None = None
    fingerprint: str | None = None
    limit: int = DEFAULT_LIMIT

    def matches(self, record: Mapping[str, Any]) -> bool:
        if record.get("audit") != 1:
            return False
        wanted = {
            "provider": self.provider,
            "connection": self.connection,
            "fingerprint": self.fingerprint,
        }
        if not all(value is None or record.get(key) == value for key, value in wanted.items()):
            return False
        return self.caller is None or caller_matches(self.caller, record.get("caller"))

    def checked(self) -> Filters:
        """These filters, every value checked fit for a query's string literal."""
        for name, value in (
            ("provider", self.provider),
            ("connection", self.connection),
            ("caller", self.caller),
            ("fingerprint", self.fingerprint),
        ):
            if value is not None and not _QUERY_SAFE.fullmatch(value):
                raise AuditInputError(f"the {name} to look for holds characters no record has")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise AuditInputError(f"the limit must be from 1 to {MAX_LIMIT}")
        if self.since.tzinfo is None or self.until.tzinfo is None or self.since >= self.until:
            raise AuditInputError("the time range must be timezone-aware and not empty")
        return self


def _pathless_role(arn: str) -> tuple[str, str, str] | None:
    """A role's ARN as (partition, account, name), its path dropped (STS drops it from a
    session's ARN); None for any other principal."""
    found = _ROLE_RE.fullmatch(arn)
    if found is None:
        return None
    return found.group(1), found.group(2), found.group(3).rsplit("/", 1)[-1]


def sessions_of(caller: str) -> str | None:
    """For a role's ARN, the prefix of its sessions' ARNs (a workload that assumed the role
    calls as `arn:aws:sts::<account>:assumed-role/<name>/<session>`); None for any other
    principal."""
    role = _pathless_role(caller)
    return None if role is None else "arn:{}:sts::{}:assumed-role/{}/".format(*role)


def caller_matches(wanted: str, caller: Any) -> bool:
    """The caller asked for: that principal, or for a role, any of its sessions: a session
    is known by its role's ARN as `allowed_principals` knows it (principals.py)."""
    if not isinstance(caller, str):
        return False
    if caller == wanted:
        return True
    role = _pathless_role(wanted)
    _, *by_role = caller_identities(caller)  # an assumed role's session: [its role's ARN]
    return role is not None and by_role == ["arn:{}:iam::{}:role/{}".format(*role)]


def _literal(value: str) -> str:
    """A checked value as a Logs Insights string literal."""
    if not _QUERY_SAFE.fullmatch(value):  # checked() ran; this is the last line of defence
        raise AuditInputError("a value to look for holds characters no record has")
    return f'"{value}"'


def insights_query(filters: Filters) -> str:
    """The Logs Insights query for `filters` (shown by `tokenvend audit --verbose`). The
    time range goes with StartQuery, not in the query."""
    filters = filters.checked()
    commands = ["fields @timestamp, @message", "filter audit = 1"]
    if filters.provider is not None:
        commands.append(f"filter provider = {_literal(filters.provider)}")
    if filters.connection is not None:
        commands.append(f"filter connection = {_literal(filters.connection)}")
    if filters.caller is not None:
        sessions = sessions_of(filters.caller)
        if sessions is None:
            commands.append(f"filter caller = {_literal(filters.caller)}")
        else:  # the role, or any of its sessions (filtered exactly once more here)
            commands.append(
                f"filter caller = {_literal(filters.caller)} "
                f"or strcontains(caller, {_literal(sessions)})"
            )
    if filters.fingerprint is not None:
        commands.append(f"filter fingerprint = {_literal(filters.fingerprint)}")
    commands += ["sort @timestamp desc", f"limit {filters.limit}"]
    return "\n| ".join(commands)


# -- reading --------------------------------------------------------------------------------


def _record(message: Any) -> dict[str, Any] | None:
    """An event's message as an audit record, or None when it is not one."""
    if not isinstance(message, str) or '"audit"' not in message:
        return None
    try:
        value = json.loads(message)
    except ValueError:
        return None
    return value if isinstance(value, dict) and value.get("audit") == 1 else None


def newest_first(records: Iterable[dict[str, Any]], filters: Filters) -> list[dict[str, Any]]:
    """The records that match, newest first, at most `filters.limit`."""
    found = [record for record in records if filters.matches(record)]
    found.sort(key=lambda record: str(record.get("time") or ""), reverse=True)
    return found[: filters.limit]


def query_insights(
    logs: Any,
    log_group: str | Sequence[str],
    filters: Filters,
    *,
    wait: float = QUERY_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[dict[str, Any]]:
    """The records `filters` asks for, by a Logs Insights query on `log_group` (or several:
    the audit log group and the functions' own, where records land when the audit log group
    cannot be written), waited for at most `wait` seconds (then stopped, and
    AuditQueryError)."""
    query = insights_query(filters)
    groups = [log_group] if isinstance(log_group, str) else list(log_group)
    where: dict[str, Any] = (
        {"logGroupName": groups[0]} if len(groups) == 1 else {"logGroupNames": groups}
    )
    started = logs.start_query(
        **where,
        startTime=int(filters.since.timestamp()),
        endTime=int(filters.until.timestamp()) + 1,  # whole seconds: the last one included
        queryString=query,
    )
    query_id = started["queryId"]
    give_up = clock() + wait
    pause = 0.25
    while True:
        answer = logs.get_query_results(queryId=query_id)
        status = answer.get("status")
        if status == "Complete":
            break
        if status not in ("Scheduled", "Running"):
            raise AuditQueryError(f"the Logs Insights query ended {status or 'without a status'}")
        if clock() + pause > give_up:
            with contextlib.suppress(Exception):  # it ends by itself anyway
                logs.stop_query(queryId=query_id)
            raise AuditQueryError(f"the Logs Insights query did not finish in {wait:g} s")
        sleep(pause)
        pause = min(pause * 2, 2.0)
    records = []
    for row in answer.get("results") or []:
        fields = {cell.get("field"): cell.get("value") for cell in row if isinstance(cell, dict)}
        record = _record(fields.get("@message"))
        if record is not None:
            records.append(record)
    return newest_first(records, filters)


def read_local(logs: Any, log_group: str, filters: Filters) -> list[dict[str, Any]]:
    """The records `filters` asks for, read from `log_group` with FilterLogEvents (the local
    stack's moto runs no Insights filter) and filtered here."""
    filters = filters.checked()
    request: dict[str, Any] = {
        "logGroupName": log_group,
        "startTime": int(filters.since.timestamp() * 1000),
        "endTime": int(filters.until.timestamp() * 1000),
    }
    records = []
    for _ in range(LOCAL_MAX_PAGES):
        answer = logs.filter_log_events(**request)
        for event in answer.get("events") or []:
            record = _record(event.get("message"))
            if record is not None:
                records.append(record)
        token = answer.get("nextToken")
        if not token or token == request.get("nextToken"):
            break
        request["nextToken"] = token
    return newest_first(records, filters)


# -- output ---------------------------------------------------------------------------------

COLUMNS = (
    "TIME",
    "ACTION",
    "TRIGGER",
    "OUTCOME",
    "CALLER",
    "SOURCE IP",
    "CONNECTION",
    "FINGERPRINT",
    "EXPIRES AT",
)


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    return " ".join(str(value).split())  # one line per record, whatever a field holds


def _row(record: Mapping[str, Any]) -> tuple[str, ...]:
    outcome = _cell(record.get("outcome"))
    if record.get("error_code"):
        outcome += f" ({_cell(record.get('error_code'))})"
    provider, connection = record.get("provider"), record.get("connection")
    where = f"{provider}/{connection}" if provider and connection else _cell(provider)
    return (
        _cell(record.get("time")),
        _cell(record.get("action")),
        _cell(record.get("trigger")),
        outcome,
        _cell(record.get("caller")),
        _cell(record.get("source_ip")),
        where,
        _cell(record.get("fingerprint")),
        _cell(record.get("expires_at")),
    )


def render_table(records: Sequence[Mapping[str, Any]]) -> str:
    lines = [COLUMNS, *(_row(record) for record in records)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
