"""What every AWS call here shares: clients made once, and AWS failures told as 503s."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import ProviderUnavailable

# Throttling and the server's own faults are worth retrying later; everything else is a bug
# or a permission problem, told in the logs, never with request data in the message.
THROTTLING = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "InternalServerError",
        "InternalServiceError",
        "InternalFailure",
        "ServiceUnavailable",
    }
)


def client(service: str, **kwargs: Any) -> Any:
    """A boto3 client with short timeouts and botocore's standard retry mode."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=2,
        read_timeout=kwargs.pop("read_timeout", 5),
        retries={"mode": "standard", "max_attempts": kwargs.pop("max_attempts", 3)},
        tcp_keepalive=True,
    )
    return boto3.session.Session().client(service, config=config, **kwargs)


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
        raise ProviderUnavailable(
            f"{what} is unavailable ({code or 'error'}); try again shortly", retry_after=2
        ) from exc
    except BotoCoreError as exc:
        raise ProviderUnavailable(
            f"{what} is unavailable ({type(exc).__name__}); try again shortly", retry_after=2
        ) from exc
