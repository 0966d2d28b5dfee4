"""AWS on loopback: moto's server, answering one request at a time.

DynamoDB guarantees that a conditional write to one item is atomic; moto's threaded server
does not, so the server here handles requests one after another. That is what makes the
lease (a conditional write) mean the same thing locally as in AWS.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

# The environment in which boto3 and Powertools run in one process against moto, with no AWS
# account: moto's fake keys (not a credential), a region, and Powertools as deployed but with
# no X-Ray daemon to reach. The tests and the benchmarks start from it.
OFFLINE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # nosec B105
    "AWS_SESSION_TOKEN": "testing",  # nosec B105
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "POWERTOOLS_SERVICE_NAME": "tokenvend",
    "POWERTOOLS_METRICS_NAMESPACE": "tokenvend",
}


class WsgiServer:
    """A werkzeug server for a WSGI application, on a socket bound here: a busy port is an
    OSError for the caller to report (werkzeug's own binding prints and exits instead)."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        threaded: bool = True,
        name: str = "wsgi",
    ) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):  # one class per server: werkzeug sets its protocol
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        sock = socket.create_server((host, port), backlog=128)
        try:
            bound = sock.getsockname()[1]
            self._server: Any = make_server(
                host, bound, app, threaded=threaded, request_handler=Quiet, fd=sock.fileno()
            )
        finally:
            sock.close()  # the server holds its own duplicate
        self._server.timeout = 0.5
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=name, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return f"http://{host}:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MotoServer(WsgiServer):
    """moto's server for every service, answering one request at a time."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        app = DomainDispatcherApplication(create_backend_app)
        super().__init__(app, host, port, threaded=False, name="moto")

    def start(self) -> Self:
        """Serve, starting from empty: moto's backends live in this process and outlast any
        earlier server in it."""
        from moto.moto_api import _internal

        _internal.moto_api_backend.reset()
        return super().start()


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind an access key: what API Gateway puts in requestContext.identity."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    arn: str
    user_id: str
    account_id: str
    session_token: str | None = field(default=None, repr=False)
    expired: bool = False
    role_arn: str | None = None  # an assumed-role session's role


class MotoKeys:
    """The access keys issued by this process's moto: IAM users' keys (CreateAccessKey) and
    STS's temporary credentials (AssumeRole).

    Verifying a SigV4 signature needs the secret key, which IAM never gives out again after
    CreateAccessKey; the moto server runs in this process, so its backends are read directly
    rather than keeping a second record of the keys that could drift from IAM's (a key
    deleted or deactivated through IAM stops working at once, as in AWS)."""

    def lookup(self, access_key_id: str) -> Principal | None:
        for _ in range(3):  # the moto thread may change the dictionaries under us: retry
            try:
                return self._user_key(access_key_id) or self._session_key(access_key_id)
            except RuntimeError:
                continue
        return None

    def _user_key(self, access_key_id: str) -> Principal | None:
        from moto.iam.models import iam_backends

        for account_id in list(iam_backends.keys()):
            for backend in list(iam_backends[account_id].values()):
                for user in list(backend.users.values()):
                    for key in list(user.access_keys):
                        if key.access_key_id == access_key_id and key.status == "Active":
                            return Principal(
                                access_key_id=access_key_id,
                                secret_access_key=key.secret_access_key,
                                arn=user.arn,
                                user_id=user.id,
                                account_id=account_id,
                            )
        return None

    def _session_key(self, access_key_id: str) -> Principal | None:
        from moto.sts.models import sts_backends

        for account_id in list(sts_backends.keys()):
            for backend in list(sts_backends[account_id].values()):
                for role in list(backend.assumed_roles):
                    if role.access_key_id == access_key_id:
                        expiration = role.expiration
                        if expiration.tzinfo is None:
                            expiration = expiration.replace(tzinfo=UTC)
                        return Principal(
                            access_key_id=access_key_id,
                            secret_access_key=role.secret_access_key,
                            arn=role.arn,
                            user_id=role.user_id,
                            account_id=role.account_id,
                            session_token=role.session_token,
                            expired=expiration <= datetime.now(UTC),
                            role_arn=role.role_arn,
                        )
        return None
