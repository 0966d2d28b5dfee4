"""AWS on loopback: moto's server, answering one request at a time.

DynamoDB guarantees that a conditional write to one item is atomic; moto's threaded server
does not, so the server here handles requests one after another. That is what makes the
lease (a conditional write) mean the same thing locally as in AWS.
"""

from __future__ import annotations

import threading
from typing import Any


class MotoServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        app = DomainDispatcherApplication(create_backend_app)
        self._server: Any = make_server(host, port, app, threaded=False, request_handler=Quiet)
        self._server.timeout = 0.5
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> MotoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
