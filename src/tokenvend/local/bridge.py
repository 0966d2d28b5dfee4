"""`--docker-bridge`: the local stack also listens on the docker bridge's address, where the
functions that SAM CLI runs in containers reach this machine.

Containers on Docker's default bridge reach the host at the bridge's own address (docker0's,
usually 172.17.0.1), never at its loopback. With the option, every server of the local stack
(AWS, the Lambda endpoint, the API, the sandbox) is reachable there too, on the same port: a
relay listens on (bridge address, port) and hands each connection to the server on
127.0.0.1. The servers stay bound to loopback alone, and each service keeps one server and
its guarantees (moto answers one request at a time). The host reaches the bridge address as
well, so a URL naming it (a demo connection's token URL) works for the in-process functions
and for the containers alike.

Only the address named or found is used, never 0.0.0.0 or `::`: that would offer an
unauthenticated Lambda endpoint and AWS to every network this machine is on.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import sys
import threading
from typing import Self

DEFAULT_INTERFACE = "docker0"
_SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address
_POLL = 0.25  # seconds between checks for stop() in the accept loop


class BridgeError(ValueError):
    """The bridge address cannot be used; the message is the one line to show."""


def bridge_address(value: str | None = None) -> str:
    """The address to listen on for `--docker-bridge [VALUE]`: VALUE if it is an IP address,
    else the IPv4 address of the network interface VALUE names (default docker0)."""
    value = (value or DEFAULT_INTERFACE).strip()
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return _interface_address(value)
    if address.is_unspecified or address.is_multicast:
        raise BridgeError(
            f"--docker-bridge {value}: name one address of this machine (docker0's, e.g. "
            "172.17.0.1), never every address"
        )
    return str(address)


def _interface_address(name: str) -> str:
    hint = (
        f"--docker-bridge: no IPv4 address on the network interface {name!r}: is Docker "
        "running? (or give the bridge's address: --docker-bridge 172.17.0.1)"
    )
    if not sys.platform.startswith("linux") or not 0 < len(name) < 16:
        raise BridgeError(hint)
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            packed = fcntl.ioctl(
                probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode("ascii", "replace"))
            )
        except OSError:
            raise BridgeError(hint) from None
    return socket.inet_ntoa(packed[20:24])


class Relay:
    """Connections to (host, port) passed on, byte for byte, to 127.0.0.1:target_port."""

    def __init__(self, host: str, port: int, target_port: int, *, name: str = "relay") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=128)
        self._listener.settimeout(_POLL)
        self._target = ("127.0.0.1", target_port)
        self._name = name
        self._stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=f"relay-{name}", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            connections = list(self._open)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(
                target=self._connect, args=(client,), name=f"relay-{self._name}", daemon=True
            ).start()

    def _connect(self, client: socket.socket) -> None:
        client.settimeout(None)
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for conn in (client, upstream):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._open.update((client, upstream))
        back = threading.Thread(
            target=self._pump, args=(upstream, client), name=f"relay-{self._name}", daemon=True
        )
        back.start()
        self._pump(client, upstream)
        back.join()
        with self._lock:
            self._open.difference_update((client, upstream))
        client.close()
        upstream.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        """Copy until `source` ends, then end `sink`'s sending side as well; on a reset, end
        both connections (so that the other direction stops too)."""
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            for conn in (source, sink):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            return
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
