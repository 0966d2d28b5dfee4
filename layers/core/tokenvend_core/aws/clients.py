"""What every AWS call here shares: clients from one session, and how AWS failures are told."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tokenvend_core.errors import Internal, ProviderUnavailable

# Permission errors are the deployment's fault, not a passing one; every other AWS failure
# (throttling, the service's own faults, timeouts) is worth a retry later.
DENIED = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "KMSAccessDeniedException",
    }
)


_session: Any = None
_session_lock = threading.Lock()


def client(service: str, **kwargs: Any) -> Any:
    """A boto3 client with short timeouts and botocore's standard retry mode. Every client of
    a container comes from one session: a session of its own would cost each client tens of
    milliseconds of cold start (boto3 sessions are not thread-safe, hence the lock)."""
    global _session
    import boto3
    from botocore.config import Config

    # botocore reads the retry settings when the client is built; `total_max_attempts`
    # counts the first attempt too (`max_attempts` would count retries only).
    config = Config(
        connect_timeout=kwargs.pop("connect_timeout", 2),
        read_timeout=kwargs.pop("read_timeout", 5),
        retries={"mode": "standard", "total_max_attempts": kwargs.pop("total_max_attempts", 3)},
        tcp_keepalive=True,
    )
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        return _session.client(service, config=config, **kwargs)


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


@contextmanager
def aws_call(what: str) -> Iterator[None]:
    """Turns a failed AWS call into `provider_unavailable` (503, Retry-After)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        if code in DENIED:
            # Not a passing fault: the deployment's permissions are wrong. Told as internal.
            raise Internal(f"{what} refused tokenvend's role ({code}); see the logs") from exc
        raise ProviderUnavailable(
            f"{what} is unavailable ({code or 'error'}); try again shortly", retry_after=2
        ) from exc
    except BotoCoreError as exc:
        raise ProviderUnavailable(
            f"{what} is unavailable ({type(exc).__name__}); try again shortly", retry_after=2
        ) from exc
