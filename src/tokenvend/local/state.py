"""The local AWS state kept across restarts: `.tokenvend/state/aws.pickle` under the directory
`tokenvend local` was started from.

What is kept is moto's own model of the services the stack uses (`SERVICES`: IAM's users,
keys, policies, groups and roles; STS's sessions; Secrets Manager's secrets with their
versions and stages; DynamoDB's tables and items; SQS's queues and messages; KMS's keys;
CloudWatch Logs' groups and their events: the audit records and the API's access log), so
that the access keys printed as exports, the connections, the cached tokens and the record
of who got which token are the same ones after a restart. moto has no persistence of its
own (getmoto/moto#1069, #9755): its backends are plain Python objects, pickled here as they
are. This module is the one place that leans on moto's internals for that (`BackendDict`,
the backends' attributes, an SQS queue's lock); a moto upgrade that changes them fails
tests/unit/test_local_state.py, and a snapshot written by another moto version is set
aside, never loaded. (moto's request recorder is no alternative: replaying CreateAccessKey
makes new keys.)

When it is written: within `interval` seconds after a request that can change something, and
at a clean stop, so that a crash loses at most the last second or so. A snapshot is taken
between two requests, never during one: the server answers one request at a time and the
wrapper `wrap` puts around moto's WSGI application holds a lock over each request, which a
snapshot takes too. The file is replaced whole (a temporary file, fsync, rename): a crash
mid-write leaves the previous snapshot. It holds the local demo secrets and keys: the file is
0600 in a 0700 directory, and a file that is not private to this user is never loaded (a
pickle can run code).

A snapshot that cannot be read (another moto version, truncated, corrupt, not private) is
moved aside as `aws.pickle.unreadable-<UTC time>` and the stack starts empty, saying so in
one log line; `--fresh` moves the state aside as `aws.pickle.old-<UTC time>` the same way.
Nothing here ever deletes the user's data. One `tokenvend local` at a time uses a
directory's state (an advisory lock, released by the system when the process ends).

    state = LocalState(workdir / STATE_DIR)
    state.attach(moto_server)          # before requests are served
    moto_server.start()                # resets moto's backends
    state.restore(fresh=options.fresh) # before the stack creates anything
    state.start_saving()
    ...
    moto_server.stop(); state.stop()   # the final snapshot
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle  # nosec B403: only files this user wrote, private to them (see _check_private)
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .log import log

try:  # POSIX; elsewhere two stacks in one directory are not prevented
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "SERVICES",
    "STATE_DIR",
    "LocalState",
    "StateInUse",
    "active_access_key",
]

STATE_DIR = Path(".tokenvend") / "state"
SNAPSHOT = "aws.pickle"
# kms: the link key; logs: the audit records and the API's access log
SERVICES = ("iam", "sts", "secretsmanager", "dynamodb", "sqs", "kms", "logs")
FORMAT = 1
_MAGIC = b"tokenvend-local-state\n"
DEFAULT_INTERVAL = 1.0  # seconds from a change to its snapshot, at most (plus the write)

# Requests that change nothing. moto's protocols POST their reads as well, so the method
# alone says little; for the JSON protocols of the kept services the action is in the
# X-Amz-Target header, and these prefixes and actions only read. (Secrets Manager notes the
# date of a GetSecretValue: that waits for the next change or the stop.) Anything else that
# is not a GET, HEAD or OPTIONS counts as a change: IAM and STS speak the query protocol,
# whose action is in the body, and are called rarely.
_READ_TARGETS = ("DynamoDB_20120810.", "secretsmanager.", "AmazonSQS.", "Logs_20140328.")
_READ_ACTIONS = ("Get", "Describe", "List", "BatchGet", "Query", "Scan", "Filter")
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class StateInUse(RuntimeError):
    """Another `tokenvend local` keeps its state in this directory; the message is the line
    to show."""


class UnreadableState(Exception):
    """Why a snapshot cannot be loaded."""


class LocalState:
    """The snapshot of moto's backends in `directory` (`<workdir>/.tokenvend/state`)."""

    def __init__(
        self,
        directory: Path,
        *,
        services: Iterable[str] = SERVICES,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / SNAPSHOT
        self.services = tuple(services)
        self.interval = interval
        self._request_lock = threading.Lock()  # one request, or one snapshot, at a time
        self._save_lock = threading.Lock()  # one snapshot taken and written at a time
        self._dirty = False
        self._ready = False  # restore() has run: from then on a snapshot is the real state
        self._stopping = threading.Event()
        self._saver: threading.Thread | None = None
        self._lock_file: int | None = None
        self._last_error: str | None = None
        self.saves = 0  # snapshots written, for the curious and the tests

    # -- serving ------------------------------------------------------------------------

    def wrap(self, app: WsgiApp) -> WsgiApp:
        """`app` (moto's WSGI application) holding the lock over each request, marking the
        state changed after any request that may have changed it."""

        def persisted(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            with self._request_lock:
                answer = app(environ, start_response)
                try:
                    body = list(answer)  # moto's answers are in memory already
                finally:
                    close = getattr(answer, "close", None)
                    if close is not None:
                        close()
                if may_change(environ):
                    self._dirty = True
            return body

        return persisted

    def attach(self, server: Any) -> None:
        """Wrap the application of an `awslocal.MotoServer` (any `WsgiServer`), before it
        serves: werkzeug's server reads its `app` at each request."""
        inner = getattr(server, "_server", None)
        if inner is None or not callable(getattr(inner, "app", None)):
            raise RuntimeError("cannot wrap this server's WSGI application (werkzeug changed?)")
        inner.app = self.wrap(inner.app)

    # -- restoring ----------------------------------------------------------------------

    def restore(self, *, fresh: bool = False) -> bool:
        """Load the snapshot into moto's backends (after the server's start, which resets
        them, and before anything is created); True if something was restored. With `fresh`,
        or when the snapshot cannot be read, move it aside and start empty. Raises
        StateInUse when another process holds this directory's state."""
        self._prepare_directory()
        self._lock_directory()
        for partial in self.directory.glob(f".{SNAPSHOT}.*.partial"):
            partial.unlink(missing_ok=True)  # a write cut short; this process holds the lock
        self._ready = True  # from here on, what moto holds is this directory's state
        if not self.path.exists():
            log("no saved local state: starting empty", state=str(self.path))
            return False
        if fresh:
            moved = self._move_aside("old")
            log("--fresh: starting empty; the previous state is kept", kept_as=str(moved))
            return False
        try:
            header, state = self._read()
        except UnreadableState as exc:
            moved = self._move_aside("unreadable")
            log(
                "the saved local state cannot be read: starting empty",
                level="WARNING",
                reason=str(exc),
                kept_as=str(moved),
            )
            return False
        with self._request_lock:
            _apply(state)
        log(
            "local state restored",
            state=str(self.path),
            saved_at=header.get("saved_at"),
            bytes=self.path.stat().st_size,
        )
        return True

    def _read(self) -> tuple[dict[str, Any], dict[str, dict[str, dict[str, Any]]]]:
        try:
            _check_private(self.path)
            data = self.path.read_bytes()
        except OSError as exc:
            raise UnreadableState(f"cannot read it: {exc.strerror or exc}") from None
        header, payload = _split(data)
        expected = _moto_version()
        if header.get("moto") != expected:
            raise UnreadableState(f"written by moto {header.get('moto')}, this is moto {expected}")
        if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            raise UnreadableState("its content does not match its checksum (cut short?)")
        try:
            state = pickle.loads(payload)  # noqa: S301  # nosec B301: private, intact
        except Exception as exc:  # any error a foreign pickle can raise
            raise UnreadableState(f"cannot unpickle it: {exc!r}") from None
        if not _well_formed(state):
            raise UnreadableState("not a snapshot of moto's backends")
        return header, state

    def _move_aside(self, why: str) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.{why}-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.{why}-{stamp}-{n}")
        os.replace(self.path, target)
        return target

    # -- saving -------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        return self._dirty

    def start_saving(self) -> None:
        """Save within `interval` seconds of each change, in a thread, until stop()."""
        if self._saver is not None:
            return
        self._saver = threading.Thread(target=self._save_when_changed, name="state", daemon=True)
        self._saver.start()

    def _save_when_changed(self) -> None:
        while not self._stopping.wait(self.interval):
            if self._dirty:
                self._save_logged()

    def save(self) -> Path:
        """Take a snapshot now, between two requests, and write it; its path. Raises the
        error of a snapshot that cannot be taken or written (the state stays marked changed,
        to be tried again)."""
        if not self._ready:
            raise RuntimeError("restore() first: saving before it would replace the user's state")
        with self._save_lock:
            with self._request_lock:
                self._dirty = False
                try:
                    payload = _dump(self.services)
                except BaseException:
                    self._dirty = True
                    raise
            try:
                _write(self.path, _join(payload))
            except BaseException:
                self._dirty = True
                raise
            self.saves += 1
            return self.path

    def _save_logged(self) -> None:
        try:
            self.save()
        except Exception as exc:
            error = repr(exc)
            if error != self._last_error:  # once per kind of failure, not once a second
                log("could not save the local state", level="WARNING", error=error)
            self._last_error = error
        else:
            if self._last_error is not None:
                log("the local state is saved again", state=str(self.path))
            self._last_error = None

    def stop(self) -> None:
        """Stop saving; write a last snapshot (once requests have stopped: after the moto
        server's stop) if restore() ran; release the directory. Safe to call twice, and
        after a start that failed before restore()."""
        self._stopping.set()
        if self._saver is not None:
            self._saver.join(timeout=10)
            self._saver = None
        if self._ready:
            self._save_logged()
            self._ready = False
        self._unlock_directory()

    # -- the directory ------------------------------------------------------------------

    def _prepare_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.directory.stat().st_uid == os.getuid():
            os.chmod(self.directory, 0o700)

    def _lock_directory(self) -> None:
        if fcntl is None or self._lock_file is not None:
            return
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StateInUse(
                f"another tokenvend local (pid {holder}) keeps its state in {self.directory}: "
                "stop it, or start this one from another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_file = fd

    def _unlock_directory(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)  # releases the flock
            self._lock_file = None


def may_change(environ: dict[str, Any]) -> bool:
    """Whether a request to moto may change its state (see _READ_TARGETS)."""
    if environ.get("REQUEST_METHOD", "GET").upper() in _READ_METHODS:
        return False
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    prefix, dot, action = target.rpartition(".")
    if dot and f"{prefix}." in _READ_TARGETS:
        return not action.startswith(_READ_ACTIONS)
    return True


def active_access_key(user_name: str, account_id: str | None = None) -> tuple[str, str] | None:
    """(access key id, secret access key) of an active key of the local IAM user
    `user_name` (in `account_id`, or any account), e.g. restored from a snapshot: IAM never
    gives a secret key out again after CreateAccessKey, so it is read from moto's backend."""
    from moto.backends import get_backend

    iam = get_backend("iam")
    for account in [account_id] if account_id else list(iam.keys()):
        if account not in iam:
            continue
        for backend in list(dict(iam[account]).values()):
            user = backend.users.get(user_name)
            if user is None:
                continue
            for key in list(user.access_keys):
                if key.status == "Active":
                    return key.access_key_id, key.secret_access_key
    return None


# -- moto's backends, as they are in this moto version --------------------------------------


def _moto_version() -> str:
    import moto

    return str(moto.__version__)


class _Pickler(pickle.Pickler):
    """Pickles moto's objects; a lock (an SQS queue's Condition) becomes a new, free one:
    a snapshot is taken between requests, when none is held. A private key of the
    `cryptography` library (moto gives every KMS key one, an HMAC key too), which cannot be
    pickled, is kept as its PKCS #8 DER bytes."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, threading.Condition):
            return threading.Condition, ()
        if isinstance(obj, _RLOCK):
            return threading.RLock, ()
        if isinstance(obj, _LOCK):
            return threading.Lock, ()
        if isinstance(obj, _PRIVATE_KEYS):
            from cryptography.hazmat.primitives import serialization

            key: Any = obj
            der = key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            return _private_key, (der,)
        return NotImplemented


def _private_key(der: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_der_private_key(der, password=None)


def _private_key_types() -> tuple[type, ...]:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    return (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)


_PRIVATE_KEYS = _private_key_types()


_RLOCK = type(threading.RLock())
_LOCK = type(threading.Lock())


def _dump(services: Iterable[str]) -> bytes:
    """{service: {account: {region: backend}}} of the services' backends, pickled."""
    from moto.backends import get_backend

    state = {
        service: {account: dict(regions) for account, regions in get_backend(service).items()}  # type: ignore[call-overload]
        for service in services
    }
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
    return buffer.getvalue()


def _apply(state: dict[str, dict[str, dict[str, Any]]]) -> None:
    from moto.backends import get_backend

    for service, accounts in state.items():
        backends = get_backend(service)  # type: ignore[call-overload]
        for account, regions in accounts.items():
            backends[account].update(regions)


def _well_formed(state: Any) -> bool:
    from moto.backends import list_of_moto_modules

    known = set(list_of_moto_modules())
    return isinstance(state, dict) and all(
        isinstance(service, str)
        and service in known
        and isinstance(accounts, dict)
        and all(isinstance(regions, dict) for regions in accounts.values())
        for service, accounts in state.items()
    )


# -- the file -------------------------------------------------------------------------------


def _join(payload: bytes) -> bytes:
    header = {
        "format": FORMAT,
        "moto": _moto_version(),
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    return _MAGIC + json.dumps(header).encode() + b"\n" + payload


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    if not data.startswith(_MAGIC):
        raise UnreadableState("not a tokenvend local state file")
    line, newline, payload = data[len(_MAGIC) :].partition(b"\n")
    try:
        header = json.loads(line) if newline else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise UnreadableState("its header is damaged")
    if header.get("format") != FORMAT:
        raise UnreadableState(f"format {header.get('format')!r}, expected {FORMAT}")
    return header, payload


def _check_private(path: Path) -> None:
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise UnreadableState("it is not private to this user (owner and mode 0600 expected)")


def _write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` whole: 0600, fsynced, renamed over the old file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
