"""The `tokenvend` command: connections, authorization, tokens, the audit trail, and the local
stack.

Exit status: 0 success; 2 bad input (nothing was written); 1 any other failure. Every
failure is one line on standard error, and no message ever holds a secret or a token.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TextIO

from tokenvend_core.catalogue.spec import spec_for, validate_secret
from tokenvend_core.errors import TokenVendError as CoreError
from tokenvend_core.names import PROVIDERS, check_connection, check_provider, parse_min_ttl
from tokenvend_core.tokens import rfc3339

from .client import (
    DEFAULT_STACK,
    TokenClient,
    TokenVendError,
    aws_session,
    read_answer,
    stack_settings,
)

OK, FAILED, BAD_INPUT = 0, 1, 2
SECRET_MAX_BYTES = 65536  # Secrets Manager's limit on a secret string
LAMBDA_READ_TIMEOUT = 75  # the provider functions' timeout (60 s) and some
MESSAGE_COLUMN = 60

EPILOG = """\
where it points:
  AWS_REGION (else AWS_DEFAULT_REGION), AWS_PROFILE, AWS_ACCESS_KEY_ID, ...
                                                     as the AWS CLI reads them
  AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE>       endpoint overrides, as boto3 reads them
  TOKENVEND_STACK          the stack's name (default: tokenvend)
  TOKENVEND_API_URL        the API's base URL (default: the stack's ApiUrl output)
  TOKENVEND_TABLE          the token table (default: the stack's TableName output)
  TOKENVEND_SECRETS_PREFIX the connection secrets' prefix (default: the stack's
                           SecretsPrefix output, else tokenvend/)
  TOKENVEND_SECRETS_KMS_KEY the KMS key new secrets are created with (default: the
                           stack's SecretsKmsKeyId output, else Secrets Manager's own)
  TOKENVEND_AUDIT_LOG_GROUP the audit records' log group (default: the stack's
                           AuditLogGroup output)
Provider functions are the stack's <Provider>FunctionName outputs, else <stack>-<provider>.
Without a stack (`tokenvend local` has no CloudFormation), set TOKENVEND_TABLE,
TOKENVEND_API_URL and TOKENVEND_AUDIT_LOG_GROUP; the export lines that `tokenvend local`
prints do.

exit status: 0 success, 2 bad input (nothing written), 1 any other failure.
"""


class CliError(Exception):
    """A failure told as one line on stderr, with its exit status."""

    def __init__(self, message: str, status: int = FAILED, *, usage: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.usage = usage  # a usage error, told as argparse tells it: "PROG: error: ..."


def _bad(message: str) -> CliError:
    return CliError(message, BAD_INPUT)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2), not a usage block."""

    def error(self, message: str) -> NoReturn:
        raise CliError(
            f"{self.prog}: error: {message} (see {self.prog} --help)", BAD_INPUT, usage=True
        )


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# -- where the commands point -------------------------------------------------------------


class Target:
    """The deployment the commands act on: boto3's own configuration, plus the stack's
    outputs (read once, and only when an environment variable does not say it already)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env
        self.stack = self.env.get("TOKENVEND_STACK") or DEFAULT_STACK
        self._session: Any = None
        self._outputs: dict[str, str] | None = None
        self._parameters: dict[str, str] | None = None
        self._outputs_problem = ""

    def session(self) -> Any:
        if self._session is None:
            self._session = aws_session(self.env)
        return self._session

    @staticmethod
    def _config(read_timeout: int = 30, attempts: int = 3) -> Any:
        from botocore.config import Config

        return Config(
            connect_timeout=5,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": attempts},
        )

    def client(self, service: str, *, read_timeout: int = 30, attempts: int = 3) -> Any:
        with aws_step(f"cannot set up the {service} client"):
            return self.session().client(service, config=self._config(read_timeout, attempts))

    def outputs(self) -> dict[str, str]:
        if self._outputs is None:
            self._describe()
        assert self._outputs is not None
        return self._outputs

    def parameters(self) -> dict[str, str]:
        """The stack's parameters (CoolDownSeconds, ...); empty without a stack."""
        if self._parameters is None:
            self._describe()
        assert self._parameters is not None
        return self._parameters

    def _describe(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self._outputs, self._parameters = {}, {}
        try:
            self._outputs, self._parameters = stack_settings(
                self.session(), self.stack, self._config()
            )
        except (BotoCoreError, ClientError) as exc:
            self._outputs_problem = _one_line(_aws_detail(exc), 200)

    def _setting(self, variable: str, output: str) -> str | None:
        return self.env.get(variable) or self.outputs().get(output) or None

    def secrets_prefix(self) -> str:
        # The template's default: an empty SecretsPrefix means "<stack name>/".
        return self._setting("TOKENVEND_SECRETS_PREFIX", "SecretsPrefix") or f"{self.stack}/"

    def table(self) -> str:
        table = self._setting("TOKENVEND_TABLE", "TableName")
        if not table:
            why = f" ({self._outputs_problem})" if self._outputs_problem else ""
            raise CliError(
                f"cannot tell the token table: stack {self.stack!r} gives no TableName"
                f"{why}; set TOKENVEND_TABLE (or TOKENVEND_STACK)"
            )
        return table

    def function(self, provider: str) -> str:
        output = provider[:1].upper() + provider[1:] + "FunctionName"
        return self.outputs().get(output) or f"{self.stack}-{provider}"

    def known_api_url(self) -> str | None:
        """The API's URL when it can be told (TOKENVEND_API_URL, the stack's ApiUrl), else
        None: for notes that are better left unsaid than guessed."""
        url = self._setting("TOKENVEND_API_URL", "ApiUrl")
        return url.rstrip("/") if url else None

    def function_log_groups(self) -> list[str]:
        """The stack's functions' own log groups (from its <Name>FunctionName outputs);
        empty without a stack."""
        return sorted(
            f"/aws/lambda/{name}"
            for key, name in self.outputs().items()
            if key.endswith("FunctionName") and name
        )

    def audit_log_group(self) -> str:
        group = self._setting("TOKENVEND_AUDIT_LOG_GROUP", "AuditLogGroup")
        if not group:
            why = f" ({self._outputs_problem})" if self._outputs_problem else ""
            raise CliError(
                f"cannot tell the audit log group: stack {self.stack!r} gives no "
                f"AuditLogGroup{why}; set TOKENVEND_AUDIT_LOG_GROUP (or TOKENVEND_STACK)"
            )
        return group

    def api_url(self) -> str:
        url = self._setting("TOKENVEND_API_URL", "ApiUrl")
        if not url:
            why = f" ({self._outputs_problem})" if self._outputs_problem else ""
            raise CliError(
                f"cannot tell the API's URL: stack {self.stack!r} gives no ApiUrl{why}; "
                "set TOKENVEND_API_URL (or TOKENVEND_STACK)"
            )
        return url


def _aws_detail(exc: BaseException) -> str:
    """What went wrong in an AWS call, in one line, without request data."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code") or "error"
        message = error.get("Message") or ""
        return f"{exc.operation_name}: {code}" + (f": {message}" if message else "")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID and friends)"
    if isinstance(exc, NoRegionError):
        return "no AWS region (set AWS_REGION)"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach {exc.kwargs.get('endpoint_url', 'the AWS endpoint')}"
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def aws_step(what: str) -> Iterator[None]:
    """Turns AWS failures (and the runtime's wrapped ones) into one-line CliErrors."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise CliError(_one_line(f"{what}: {_aws_detail(exc)}")) from None
    except CoreError as exc:
        cause = exc.__cause__
        detail = _aws_detail(cause) if cause is not None else exc.message
        raise CliError(_one_line(f"{what}: {detail}")) from None


# -- input ----------------------------------------------------------------------------------


def _names(provider: str, connection: str) -> tuple[str, str]:
    try:
        return check_provider(provider), check_connection(connection)
    except CoreError as exc:
        raise _bad(exc.message) from None


def _read_text(path: str | None, stdin: TextIO, what: str) -> str:
    if path is None or path == "-":
        if stdin.isatty():
            print(f"reading {what} from standard input; end with Ctrl-D", file=sys.stderr)
        text = stdin.read(SECRET_MAX_BYTES + 1)
        source = "standard input"
    else:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read(SECRET_MAX_BYTES + 1)
        except OSError as exc:
            raise _bad(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
        except UnicodeDecodeError:
            raise _bad(f"{path} is not UTF-8 text") from None
        source = path
    if len(text.encode("utf-8")) > SECRET_MAX_BYTES:
        raise _bad(f"{what} from {source} is larger than Secrets Manager's 64 KiB")
    if not text.strip():
        raise _bad(f"{source} is empty: expected {what}")
    return text


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object hook that refuses an object holding one key twice: JSON parsers
    disagree on which value wins (Python's, the last; others, the first or an error), so
    the secret would not mean one thing to everyone who reads it."""
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise _DuplicateKey(key)
        value[key] = item
    return value


def _secret_value(provider: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        # A key's name only, never a value (the values hold the client secret).
        raise _bad(
            f"the secret's JSON holds the key {_one_line(exc.key, 64)!r} more than once; keep one"
        ) from None
    except json.JSONDecodeError as exc:
        # The position only: the text itself holds the client secret.
        raise _bad(
            f"the secret is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise _bad("the secret is not valid JSON: nested too deeply") from None
    try:
        return validate_secret(
            spec_for(provider), value, allow_http_loopback=_local_secrets_manager()
        )
    except CoreError as exc:
        raise _bad(exc.message) from None


def _local_secrets_manager() -> bool:
    """True when the secrets go to a Secrets Manager on this machine (the local stack), whose
    functions alone accept plain-HTTP token URLs on loopback."""
    return _on_loopback(os.environ, "SECRETS_MANAGER")


def _on_loopback(env: Mapping[str, str], service: str) -> bool:
    """True when boto3 sends `service`'s requests (AWS_ENDPOINT_URL_<SERVICE>, else
    AWS_ENDPOINT_URL) to this machine: the local stack."""
    from urllib.parse import urlsplit

    endpoint = env.get(f"AWS_ENDPOINT_URL_{service}") or env.get("AWS_ENDPOINT_URL", "")
    return urlsplit(endpoint).hostname in ("127.0.0.1", "localhost", "::1")


# -- connections ----------------------------------------------------------------------------


def cmd_put(args: argparse.Namespace, target: Target) -> int:
    provider, connection = _names(args.provider, args.connection)
    text = _read_text(args.file, sys.stdin, "the secret's JSON")
    value = _secret_value(provider, text)
    from botocore.exceptions import ClientError

    prefix = target.secrets_prefix()
    name = f"{prefix}{provider}/{connection}"
    secret_string = json.dumps(value, separators=(",", ":"))
    client = target.client("secretsmanager")
    with aws_step(f"cannot store the secret {name}"):
        try:
            # The stack's key (SecretsKmsKeyId) when it has a customer-managed one.
            key = target._setting("TOKENVEND_SECRETS_KMS_KEY", "SecretsKmsKeyId")
            answer = client.create_secret(
                Name=name,
                SecretString=secret_string,
                Description=f"tokenvend connection {connection} of {provider}",
                **({"KmsKeyId": key} if key else {}),
            )
            print(f"created secret {name} (version {answer.get('VersionId', '?')})")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceExistsException":
                raise
            answer = client.put_secret_value(SecretId=name, SecretString=secret_string)
            print(f"added version {answer.get('VersionId', '?')} to secret {name}")
    if "allowed_principals" in value:
        from tokenvend_core.aws.store import TokenStore

        # A new access list is in force at once, not from the next refresh: every vend
        # checks callers against the list beside the cached token. (A list removed widens
        # access: that waits for the next refresh, within RefreshRateMinutes.)
        with aws_step(
            f"stored the secret {name}, but cannot put its access list in force yet "
            "(the next scheduled refresh does)"
        ):
            tokens = TokenStore(target.client("dynamodb"), target.table())
            tokens.set_access(provider, connection, value["allowed_principals"])
    note = _callback_note(target, provider, value)
    if note:
        print(_one_line(note), file=sys.stderr)
    return OK


#: The path of the link flow's callback under the API's URL (contract: "Connecting a user").
CALLBACK_PATH = "/connect/callback"


def _callback_note(target: Target, provider: str, value: Mapping[str, Any]) -> str | None:
    """What to tell an operator whose authorization-code connection names a redirect_uri
    other than this stack's link callback: `tokenvend connect` links send the user's browser
    to the secret's redirect_uri, which must be the callback, registered with the provider's
    app. None when they match, or when the API's URL cannot be told (nothing is guessed)."""
    if not spec_for(provider).uses_refresh_token:
        return None
    api_url = target.known_api_url()
    if not api_url:
        return None
    callback = api_url + CALLBACK_PATH
    redirect_uri = value.get("redirect_uri")
    if redirect_uri == callback:
        return None
    return (
        f"note: redirect_uri is {redirect_uri!r}, not this stack's link callback; for "
        f"`tokenvend connect` links, set redirect_uri to {callback} and register that URL "
        "with the provider's app"
    )


def cmd_delete(args: argparse.Namespace, target: Target) -> int:
    provider, connection = _names(args.provider, args.connection)
    days = args.recovery_days
    if days is not None and not 7 <= days <= 30:
        raise _bad("--recovery-days must be from 7 to 30")
    from botocore.exceptions import ClientError

    from tokenvend_core.aws.store import TokenStore

    name = f"{target.secrets_prefix()}{provider}/{connection}"
    tokens = TokenStore(target.client("dynamodb"), target.table())
    client = target.client("secretsmanager")
    # The secret first: while it exists, a vend request could cache a new token again.
    with aws_step(f"cannot delete the secret {name}"):
        try:
            # Forced deletion does not tell whether the secret existed: ask first.
            client.describe_secret(SecretId=name)
            if days is None:
                client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
                said = f"deleted secret {name}"
            else:
                client.delete_secret(SecretId=name, RecoveryWindowInDays=days)
                said = f"scheduled secret {name} for deletion in {days} days"
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            said = f"no secret {name}"
            with aws_step(f"cannot read the token table {target.table()}"):
                cached = tokens.get(provider, connection, consistent=True)
            if cached is None:
                # Neither a secret nor a cached token: there is no such connection.
                raise CliError(
                    f"no connection {provider}/{connection}: no secret {name} and no cached "
                    "token (see tokenvend connections list)"
                ) from None
    with aws_step(f"{said}, but cannot delete its cached token"):
        if days is None:
            tokens.delete(provider, connection)
        else:
            # Restorable: the token goes, a fallback refresh token stays with the item.
            tokens.retire(provider, connection)
    print(f"{said}; deleted the cached token of {provider}/{connection}")
    return OK


def _status(provider: str, has_secret: bool, state: Any, now: float) -> str:
    """One word for the connection's health (see `connections list --help`)."""
    has_token = state is not None and state.expires_at > 0
    if not has_secret:
        return "no_secret"
    if state is not None and state.error_code == "authorization_required":
        return "needs_authorization"
    if state is not None and state.error_code and state.error_permanent:
        return "permanent_error"
    if state is not None and state.error_code:
        return "failing"
    if spec_for(provider).uses_refresh_token and not has_token:
        return "needs_authorization"
    if state is not None and state.leased(now):
        return "refreshing"
    if not has_token:
        return "no_token"
    if state.expires_at <= now:
        return "expired"
    return "ok"


def _when(epoch: float | None) -> str | None:
    return rfc3339(epoch) if epoch else None


def connection_rows(target: Target, now: float) -> list[dict[str, Any]]:
    """Every connection (a secret, a token item, or both) with its token's state."""
    from tokenvend_core.aws.secrets import SecretStore
    from tokenvend_core.aws.store import TokenStore

    secrets = SecretStore(target.client("secretsmanager"), target.secrets_prefix())
    tokens = TokenStore(target.client("dynamodb"), target.table())
    rows = []
    for provider in PROVIDERS:
        with aws_step(f"cannot list the secrets under {secrets.prefix}{provider}/"):
            versions = secrets.list(provider)
        with aws_step(f"cannot read the token table {target.table()}"):
            states = {state.connection: state for state in tokens.connections(provider)}
        for connection in sorted(set(versions) | set(states)):
            state = states.get(connection)
            has_token = state is not None and state.expires_at > 0
            row: dict[str, Any] = {
                "provider": provider,
                "connection": connection,
                "status": _status(provider, connection in versions, state, now),
                "secret": connection in versions,
                "secret_version": versions.get(connection),
                "expires_at": _when(state.expires_at) if has_token and state else None,
                "expires_in": int(state.expires_at - now) if has_token and state else None,
                "refreshed_at": _when(state.refreshed_at) if state else None,
                "grant_expires_at": (
                    _when(state.refresh_expires_at) if state and state.refresh_expires_at else None
                ),
                "token_version": state.version if state else 0,
                "refreshing": bool(state and state.leased(now)),
                "failing_since": _when(state.failing_since) if state else None,
                "failures": state.failures if state else 0,
                "next_attempt_at": (
                    _when(state.next_attempt_at) if state and state.error_code else None
                ),
                "last_error": (
                    {
                        "code": state.error_code,
                        "message": state.error_message or "",
                        "permanent": state.error_permanent,
                    }
                    if state and state.error_code
                    else None
                ),
            }
            rows.append(row)
    return rows


def human_seconds(seconds: float) -> str:
    """3725 -> '1h 2m'; 75 -> '1m 15s'; 9 -> '9s'."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def _status_text(row: dict[str, Any]) -> str:
    grant = row.get("grant_expires_at")
    if grant and row["status"] == "ok":
        from datetime import datetime

        left = datetime.fromisoformat(grant.replace("Z", "+00:00")).timestamp() - time.time()
        return f"ok (grant ends in {human_seconds(max(0.0, left))})"
    status = row["status"]
    if status == "failing":
        since = row["failing_since"]
        return f"failing since {since}" if since else "failing"
    if row["refreshing"] and status != "refreshing":
        return f"{status.replace('_', ' ')} (refreshing)"
    return str(status).replace("_", " ")


def render_table(rows: list[dict[str, Any]], now: float) -> str:
    header = ("PROVIDER", "CONNECTION", "STATUS", "EXPIRES IN", "LAST REFRESH", "LAST ERROR")
    lines = [header]
    for row in rows:
        expires_in = row["expires_in"]
        if expires_in is None:
            expires = "-"
        elif expires_in > 0:
            expires = human_seconds(expires_in)
        else:
            expires = f"expired {human_seconds(-expires_in)} ago"
        refreshed = row["refreshed_at"]
        if refreshed:
            from datetime import datetime

            at = datetime.fromisoformat(refreshed.replace("Z", "+00:00")).timestamp()
            refreshed = f"{human_seconds(max(0.0, now - at))} ago"
        error = row["last_error"]
        if error:
            message = error["message"]
            if len(message) > MESSAGE_COLUMN:
                message = message[: MESSAGE_COLUMN - 1] + "…"
            last_error = f"{error['code']}: {message}"
        else:
            last_error = "-"
        lines.append(
            (
                row["provider"],
                row["connection"],
                _status_text(row),
                expires,
                refreshed or "-",
                last_error,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in lines
    )


def cmd_list(args: argparse.Namespace, target: Target) -> int:
    now = time.time()
    rows = connection_rows(target, now)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no connections (secrets under {target.secrets_prefix()})")
    else:
        print(render_table(rows, now))
    return OK


# -- authorize ------------------------------------------------------------------------------


def cmd_authorize(args: argparse.Namespace, target: Target) -> int:
    provider, connection = _names(args.provider, args.connection)
    if not spec_for(provider).uses_refresh_token:
        takers = [name for name in PROVIDERS if spec_for(name).uses_refresh_token]
        raise _bad(f"{provider} does not take authorization codes (only {', '.join(takers)} does)")
    code = args.code
    if not code.strip() or len(code) > 4096:
        raise _bad("--code must be the authorization code from the redirect")
    event: dict[str, Any] = {"action": "authorize", "connection": connection, "code": code}
    if args.redirect_uri is not None:
        event["redirect_uri"] = args.redirect_uri
    function = target.function(provider)
    # One attempt only: an authorization code can be redeemed once.
    client = target.client("lambda", read_timeout=LAMBDA_READ_TIMEOUT, attempts=1)
    with aws_step(f"cannot invoke {function}"):
        answer = client.invoke(
            FunctionName=function,
            InvocationType="RequestResponse",
            Payload=json.dumps(event).encode("utf-8"),
        )
        payload = answer["Payload"].read()
    if answer.get("FunctionError"):
        raise CliError(f"{function} failed ({answer['FunctionError']}); see its logs")
    try:
        data = json.loads(payload)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise CliError(f"{function} gave an unreadable answer")
    if not data.get("ok"):
        found = data.get("error")
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        code_ = str(error.get("code") or "internal")
        message = str(error.get("message") or "")
        status = BAD_INPUT if code_ == "invalid_request" else FAILED
        raise CliError(_one_line(f"{code_}: {message}"), status)
    said = f"authorized {provider}/{connection}"
    if data.get("expires_at"):
        said += f": access token until {data['expires_at']}"
    if data.get("refresh_expires_at"):
        said += f", refresh token until {data['refresh_expires_at']}"
    print(said)
    return OK


# -- tokens through the API -----------------------------------------------------------------


def _api_client(target: Target) -> TokenClient:
    return TokenClient(target.api_url(), session=target.session(), stack=target.stack)


def _print_answer(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(answer, indent=2))
    else:
        print(answer["access_token"])
    if answer.get("stale"):
        error = answer.get("refresh_error") or {}
        print(
            _one_line(
                "warning: stale token: the refresh failed "
                f"({error.get('code', '?')}: {error.get('message', '')})"
            ),
            file=sys.stderr,
        )


def _api_error(exc: TokenVendError) -> CliError:
    message = f"{exc.code}: {exc.message}"
    if exc.retry_after is not None:
        message += f" (retry after {math.ceil(exc.retry_after)} s)"
    status = BAD_INPUT if exc.status == 400 else FAILED
    return CliError(_one_line(message), status)


# -- links: a user authorizes a connection in a browser -------------------------------------


def cmd_connect(args: argparse.Namespace, target: Target) -> int:
    provider, connection = _names(args.provider, args.connection)
    if not spec_for(provider).uses_refresh_token:
        takers = [name for name in PROVIDERS if spec_for(name).uses_refresh_token]
        raise _bad(f"{provider} has no user to connect (only {', '.join(takers)} has)")
    path = f"/connections/{provider}/{connection}/connect"
    try:
        answer = _signed_post(target, path)
    except TokenVendError as exc:
        raise _api_error(exc) from None
    if not isinstance(answer.get("url"), str) or not answer["url"]:
        raise CliError("the API answered without a link")
    print(json.dumps(answer, indent=2) if args.json else answer["url"])
    return OK


def _signed_post(target: Target, path: str) -> dict[str, Any]:
    """A SigV4-signed POST (service execute-api) to the API with no body; the JSON object
    answered, or TokenVendError as the API client raises it (status, code, message)."""
    import requests
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    base = target.api_url().rstrip("/")
    url = base + path
    session = target.session()
    with aws_step("cannot load AWS credentials"):
        credentials = session.get_credentials()
    if credentials is None:
        raise CliError(
            "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID and friends)"
        )
    region = session.region_name
    if not region:
        raise CliError("no AWS region (set AWS_REGION)")
    request = AWSRequest(method="POST", url=url, headers={"Accept": "application/json"})
    SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
    try:
        response = requests.post(
            url, headers=dict(request.headers.items()), timeout=(5, 35), allow_redirects=False
        )
    except requests.RequestException as exc:
        raise TokenVendError(
            0, "unreachable", f"cannot reach the tokenvend API at {base} ({type(exc).__name__})"
        ) from None
    return read_answer(response, token=False)


def cmd_token(args: argparse.Namespace, target: Target) -> int:
    provider, connection = _names(args.provider, args.connection)
    try:
        min_ttl = parse_min_ttl(args.min_ttl)
    except CoreError as exc:
        raise _bad(f"--min-ttl: {exc.message}") from None
    try:
        answer = _api_client(target).get(provider, connection, min_ttl)
    except TokenVendError as exc:
        raise _api_error(exc) from None
    _print_answer(answer, args.json)
    return OK


def cmd_refresh(args: argparse.Namespace, target: Target) -> int:
    provider, connection = _names(args.provider, args.connection)
    rejected = args.rejected_token
    if rejected == "-":
        rejected = sys.stdin.readline().strip()
        if not rejected:
            raise _bad("no token on standard input for --rejected-token -")
    before = _cached_state(target, provider, connection)
    try:
        answer = _api_client(target).refresh(provider, connection, rejected_token=rejected)
    except TokenVendError as exc:
        raise _api_error(exc) from None
    _print_answer(answer, args.json)
    if rejected is not None and answer.get("access_token") == rejected:
        # Some providers answer a token request with the token still in force (DingTalk,
        # until it expires): no refresh replaces it, and callers go on getting it.
        print(
            "warning: the provider issued the rejected token again (it re-issues a token "
            f"until it expires, at {answer.get('expires_at')}); tokenvend still hands it "
            "out: see docs/runbook.md#a-token-leaked",
            file=sys.stderr,
        )
        return OK
    if before is not None and not answer.get("stale"):
        after = _cached_state(target, provider, connection)
        note = _not_refreshed(target, before, after, answer, rejected, time.time())
        if note:
            print(_one_line(note), file=sys.stderr)
    return OK


def _cached_state(target: Target, provider: str, connection: str) -> Any:
    """The connection's item in the token table (its version, when it was refreshed), or
    None when this caller cannot read the table: the API needs no table access, and the
    refresh goes ahead without it."""
    from botocore.exceptions import BotoCoreError, ClientError

    from tokenvend_core.aws.store import TokenStore

    try:
        dynamodb = target.client("dynamodb", read_timeout=5, attempts=1)
        return TokenStore(dynamodb, target.table()).get(provider, connection, consistent=True)
    except (CliError, CoreError, BotoCoreError, ClientError):
        return None


def _not_refreshed(
    target: Target,
    before: Any,
    after: Any,
    answer: dict[str, Any],
    rejected: str | None,
    now: float,
) -> str | None:
    """What to say when the API answered the refresh with the token it already had, and
    why; None when a new token was stored (even one the provider re-issued unchanged, as
    DingTalk does within a token's validity) or when the table does not tell.

    The API's answer is the same either way; the token table's version says which it was:
    the provider function stores every token it fetches as a new version."""
    from tokenvend_core.tokens import sha256_hex

    if after is None or after.version != before.version:
        return None
    if after.token_sha256() != sha256_hex(str(answer.get("access_token"))):
        return None  # the table moved on since the answer: nothing certain to say
    left = answer.get("expires_in")
    served = "the API served the current token" + (
        f", which expires in {human_seconds(left)}" if isinstance(left, int) else ""
    )
    if rejected is not None:
        return f"not refreshed: the rejected token had already been replaced; {served}"
    last = max(after.last_attempt_at, after.refreshed_at)
    ago = human_seconds(max(0.0, now - last))
    cool_down = target.parameters().get("CoolDownSeconds", "")
    if cool_down.isdigit():
        why = f"the connection was refreshed {ago} ago and the cool-down is {cool_down} s"
    else:
        why = f"the connection was refreshed {ago} ago, within its cool-down (CoolDownSeconds)"
    return f"not refreshed: {why}; {served}"


# -- the audit trail ------------------------------------------------------------------------


def audit_filters(args: argparse.Namespace, clock: Callable[[], float], stdin: Any) -> Any:
    """The question `tokenvend audit` was asked, every value checked (exit 2 otherwise)
    before anything is sent: --token-file's token is read and hashed here, and only its
    fingerprint kept. The range ends when `clock` is read, once the token is: a pipe's token
    may come from a command that has only just got it (`tokenvend token ... | tokenvend audit
    --token-file -`)."""
    from datetime import UTC, datetime

    from . import audit

    try:
        provider = connection = fingerprint = caller = None
        if args.connection is not None:
            provider, connection = audit.parse_connection(args.connection)
        if args.caller is not None:
            caller = audit.parse_caller(args.caller)
        if args.fingerprint is not None:
            fingerprint = audit.parse_fingerprint(args.fingerprint)
        if args.token_file is not None:
            fingerprint = audit.read_token_fingerprint(args.token_file, stdin)
        moment = datetime.fromtimestamp(clock(), UTC)
        return audit.Filters(
            since=audit.parse_since(args.since, moment),
            until=moment,
            provider=provider,
            connection=connection,
            caller=caller,
            fingerprint=fingerprint,
            limit=audit.parse_limit(args.limit),
        ).checked()
    except audit.AuditInputError as exc:
        raise _bad(str(exc)) from None


def _query_insights(client: Any, group: str, functions: list[str], filters: Any) -> Any:
    """The records, from the audit log group and the functions' own log groups, where
    records go when the audit log group cannot be written (docs/security.md, "Audit
    trail"); from the audit log group alone when one of those is missing."""
    from botocore.exceptions import ClientError

    from . import audit

    try:
        return audit.query_insights(client, [group, *functions], filters)
    except ClientError as exc:
        missing = exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException"
        if not functions or not missing:
            raise
    print("note: a function's log group is missing; querying the audit log group alone",
          file=sys.stderr)  # fmt: skip
    return audit.query_insights(client, group, filters)


def cmd_audit(args: argparse.Namespace, target: Target) -> int:
    from . import audit

    filters = audit_filters(args, time.time, getattr(sys.stdin, "buffer", sys.stdin))
    group = target.audit_log_group()
    local = _on_loopback(target.env, "CLOUDWATCH_LOGS")
    span = f"from {rfc3339(filters.since.timestamp())} to {rfc3339(filters.until.timestamp())}"
    if args.verbose and filters.fingerprint is not None and args.token_file is not None:
        print(f"fingerprint of the token in --token-file: {filters.fingerprint}", file=sys.stderr)
    client = target.client("logs")
    if local:
        if args.verbose:
            print(
                f"reading {group} {span} with FilterLogEvents (the local stack runs no Logs "
                "Insights query); filtered here as this query would:\n"
                + audit.insights_query(filters),
                file=sys.stderr,
            )
        with aws_step(f"cannot read the audit log group {group}"):
            records = audit.read_local(client, group, filters)
    else:
        if args.verbose:
            print(
                f"Logs Insights query on {group} {span}:\n" + audit.insights_query(filters),
                file=sys.stderr,
            )
        with aws_step(f"cannot query the audit log group {group}"):
            try:
                records = _query_insights(client, group, target.function_log_groups(), filters)
            except audit.AuditQueryError as exc:
                raise CliError(f"cannot query the audit log group {group}: {exc}") from None
    if args.json:
        print(json.dumps(records, indent=2))
    elif not records:
        print(f"no audit records in {group} {span} match")
    else:
        print(audit.render_table(records))
    return OK


# -- the local stack ------------------------------------------------------------------------


def _override(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {raw!r}")
    return name, value


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {raw!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {raw!r}")
    return value


def _positive_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {raw!r}")
    return value


def local_parameters(args: argparse.Namespace) -> dict[str, str]:
    """The template parameters of `tokenvend local`: --api-type sets ApiType (and says so
    when --parameter-overrides says otherwise)."""
    parameters = dict(args.parameter_overrides)
    if args.api_type is not None:
        chosen = args.api_type.upper()
        if parameters.get("ApiType", chosen) != chosen:
            raise CliError(
                f"--api-type {args.api_type} and --parameter-overrides ApiType="
                f"{parameters['ApiType']} disagree"
            )
        parameters["ApiType"] = chosen
    return parameters


def cmd_local(args: argparse.Namespace, target: Target) -> int:
    import importlib

    try:
        local = importlib.import_module("tokenvend.local")
    except ImportError as exc:
        raise CliError(
            f"tokenvend local needs its extra dependencies: pip install 'tokenvend[local]' ({exc})"
        ) from None
    env = target.env
    return int(
        local.run(
            stack=args.stack or env.get("TOKENVEND_STACK") or DEFAULT_STACK,
            region=args.region
            or env.get("AWS_REGION")
            or env.get("AWS_DEFAULT_REGION")
            or "us-east-1",
            api_port=args.api_port,
            lambda_port=args.lambda_port,
            aws_port=args.aws_port,
            sandbox_port=args.sandbox_port,
            sandbox=not args.no_sandbox,
            refresh_every=args.refresh_every,
            parameters=local_parameters(args),
            docker_bridge=args.docker_bridge,
            fresh=args.fresh,
        )
    )


# -- the parser -----------------------------------------------------------------------------


def _pair(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("provider", metavar="PROVIDER", help=", ".join(PROVIDERS))
    parser.add_argument("connection", metavar="CONNECTION", help="the connection's name")


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="tokenvend",
        description="Vend short-lived access tokens for third-party APIs.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    local = commands.add_parser(
        "local",
        help="run the whole stack on this machine",
        description="Run the whole stack on this machine, in the foreground: AWS services "
        "on loopback, the functions behind a Lambda Invoke API, the signed API, the "
        "schedules, and (unless --no-sandbox) sandbox providers with a `demo` connection "
        "each. Prints a line starting with `ready`, then the export lines for a second shell.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    local.add_argument("--stack", help="stack name (default: TOKENVEND_STACK, else tokenvend)")
    local.add_argument("--region", help="region (default: AWS_REGION, else us-east-1)")
    local.add_argument("--api-port", type=_port, default=3000, help="the API (default 3000)")
    local.add_argument(
        "--lambda-port", type=_port, default=3001, help="the Lambda Invoke API (default 3001)"
    )
    local.add_argument(
        "--aws-port", type=_port, default=4566, help="the AWS services (default 4566)"
    )
    local.add_argument(
        "--sandbox-port", type=_port, default=3002, help="sandbox providers (default 3002)"
    )
    local.add_argument("--no-sandbox", action="store_true", help="no sandbox providers")
    local.add_argument(
        "--refresh-every",
        type=_positive_seconds,
        metavar="SECONDS",
        help="fire the refresh schedules this often (default: the template's rate)",
    )
    local.add_argument(
        "--parameter-overrides",
        nargs="+",
        type=_override,
        default=[],
        metavar="NAME=VALUE",
        help="template parameters, as `sam deploy` takes them (e.g. CoolDownSeconds=1)",
    )
    local.add_argument(
        "--api-type",
        choices=["rest", "http"],
        default=None,
        help="the API to serve, as the template's ApiType: rest (API Gateway's REST API, "
        "the default) or http (an HTTP API: payload format 2.0, no resource policy)",
    )
    local.add_argument(
        "--docker-bridge",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="also listen on the docker bridge's address (docker0's, or ADDRESS), where the "
        "functions SAM CLI runs in containers reach this machine; loopback stays, never "
        "0.0.0.0. The demo connections then name that address (see .tokenvend/sam-env.json)",
    )
    local.add_argument(
        "--fresh",
        action="store_true",
        help="start with empty local AWS state (users, keys, connections, tokens); the "
        "previous one is kept as .tokenvend/state/aws.pickle.old-<time>",
    )
    local.set_defaults(run=cmd_local)

    connections = commands.add_parser(
        "connections",
        help="put, list and delete connections",
        description="A connection is one set of credentials at one provider, kept in the "
        "secret <prefix><provider>/<connection>.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    what = connections.add_subparsers(dest="action", metavar="ACTION")
    put = what.add_parser(
        "put",
        help="create a connection's secret, or add a new version of it",
        description="Store a connection's secret: a JSON object with the provider's fields, "
        "from --file or standard input. It is checked against the provider's fields before "
        "anything is written; an object that holds a key twice is refused. The JSON replaces "
        "the whole secret: for wps365, a refresh_token "
        "that tokenvend stored is dropped unless the JSON holds it, and the connection then "
        "needs `tokenvend authorize` again.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    _pair(put)
    put.add_argument("--file", metavar="PATH", help="read the JSON here (default: stdin; - too)")
    put.set_defaults(run=cmd_put)

    listing = what.add_parser(
        "list",
        help="every connection with its token's state",
        description="Every connection (secret or cached token) with its token's state. "
        "Status: ok; refreshing (a refresh holds the lease); failing since TIME (transient "
        "errors, retried); permanent error (the provider refused the configuration: fix the "
        "secret); needs authorization (wps365 without a token, or its grant was refused); "
        "no token (fetched on first use or by the schedule); expired; no secret (a cached "
        "token whose secret is gone). Tokens are never printed.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    listing.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    listing.set_defaults(run=cmd_list)

    delete = what.add_parser(
        "delete",
        help="delete a connection's secret and its cached token",
        description="Delete the connection's secret and its cached token (exit status 1 when "
        "there is neither). The secret is "
        "deleted at once, without Secrets Manager's recovery window "
        "(ForceDeleteWithoutRecovery), so that the name can be put again right away; "
        "--recovery-days schedules the deletion instead.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    _pair(delete)
    delete.add_argument(
        "--recovery-days",
        type=int,
        metavar="DAYS",
        help="keep the secret recoverable for 7 to 30 days",
    )
    delete.set_defaults(run=cmd_delete)

    authorize = commands.add_parser(
        "authorize",
        help="redeem an authorization code (wps365)",
        description="Redeem an authorization code through the provider's function; the "
        "refresh token it yields is stored in the connection's secret.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    _pair(authorize)
    authorize.add_argument("--code", required=True, help="the code from the redirect")
    authorize.add_argument(
        "--redirect-uri", metavar="URI", help="default: the secret's redirect_uri"
    )
    authorize.set_defaults(run=cmd_authorize)

    connect = commands.add_parser(
        "connect",
        help="a link for a user to authorize a connection in a browser",
        description="Ask the API for a link (POST /connections/PROVIDER/CONNECTION/connect) "
        "that a user opens in a browser to authorize the connection at the provider: the "
        "provider's consent page, then the stack's /connect/callback, which redeems the code "
        "(no code to copy). Prints the link alone; it works once, for 10 minutes, and a newer "
        "link of the same connection replaces it. The connection's redirect_uri must be "
        "<API URL>/connect/callback, registered with the provider's app.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    _pair(connect)
    connect.add_argument(
        "--json", action="store_true", help="print the whole answer (url, expires_at)"
    )
    connect.set_defaults(run=cmd_connect)

    token = commands.add_parser(
        "token",
        help="get a token through the API",
        description="Get a token through the signed API; prints the access token alone.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    _pair(token)
    token.add_argument(
        "--min-ttl", metavar="N", help="seconds the token must have left, 0 to 3600 (300)"
    )
    token.add_argument("--json", action="store_true", help="print the whole answer")
    token.set_defaults(run=cmd_token)

    refresh = commands.add_parser(
        "refresh",
        help="get a new token through the API",
        description="Ask the API for a new token; prints the access token alone. With "
        "--rejected-token, a new one is fetched only if that token is still the current one. "
        "Within the connection's cool-down (the stack's CoolDownSeconds) the API serves the "
        "current token instead of asking the provider again; where this command can read "
        "the token table (as `connections list` does), it says so on standard error, and why.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    _pair(refresh)
    refresh.add_argument(
        "--rejected-token",
        metavar="TOKEN",
        help="the token a target refused (- reads it from standard input)",
    )
    refresh.add_argument("--json", action="store_true", help="print the whole answer")
    refresh.set_defaults(run=cmd_refresh)

    audit = commands.add_parser(
        "audit",
        help="who got which token: the audit records",
        description="The audit records (one per decision of every function: each token "
        "handed out, each refresh, each authorization) that match every filter given, "
        "newest first. Against a deployed stack, a CloudWatch Logs Insights query on the "
        "audit log group (--verbose shows it); against `tokenvend local`, its records read "
        "and filtered here. A token given with --token-file is hashed on this machine: only "
        "its fingerprint is looked for, never the token sent or shown.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    audit.add_argument(
        "--connection", metavar="PROVIDER/CONNECTION", help="one connection, e.g. dingtalk/corp-a"
    )
    audit.add_argument("--caller", metavar="ARN", help="one caller's IAM ARN, exactly")
    which = audit.add_mutually_exclusive_group()
    which.add_argument(
        "--fingerprint",
        metavar="HEX",
        help="a token's fingerprint: the first 16 hex characters of its SHA-256 (a whole "
        "SHA-256 is cut to 16)",
    )
    which.add_argument(
        "--token-file",
        metavar="PATH",
        help="the token itself, in a file (- reads standard input); its fingerprint is "
        "computed here, from the content with surrounding whitespace stripped",
    )
    audit.add_argument(
        "--since",
        default="1d",
        metavar="WHEN",
        help="how far back: 30m, 1h, 2d, 1w, or an ISO-8601 time (UTC unless it says); 1d",
    )
    audit.add_argument(
        "--limit", default="1000", metavar="N", help="at most N records (1 to 10000; 1000)"
    )
    audit.add_argument("--json", action="store_true", help="a JSON array of the records")
    audit.add_argument("--verbose", action="store_true", help="show the query on standard error")
    audit.set_defaults(run=cmd_audit)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tokenvend")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help
            return exc.code if isinstance(exc.code, int) else OK
        if args.version:
            print(f"tokenvend {_version()}")
            return OK
        run = getattr(args, "run", None)
        if run is None:
            prog = "tokenvend connections" if args.command == "connections" else "tokenvend"
            raise CliError(
                f"{prog}: error: a command is needed (see {prog} --help)", BAD_INPUT, usage=True
            )
        return int(run(args, Target()))
    except CliError as exc:
        if exc.usage:
            print(_one_line(exc.message), file=sys.stderr)
        else:
            _say_error(exc.message)
        return exc.status
    except KeyboardInterrupt:
        _say_error("interrupted")
        return FAILED
    except BrokenPipeError:
        # The reader went away (`tokenvend connections list | head`): nothing to tell.
        sys.stderr.close()
        return FAILED
    except Exception as exc:  # a bug: one line, no traceback
        _say_error(f"unexpected {type(exc).__name__}: {_one_line(str(exc), 200)}")
        return FAILED


def _say_error(message: str) -> None:
    print(f"error: {_one_line(message)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
