"""Storage roots: where artifacts live (``file://`` local disk, ``s3://bucket/prefix``, ``memory://``).

A :class:`StorageRoot` pairs a URI with its fsspec filesystem. Paths handed around are full URIs
(``root.join("datasets", key)``); every fsspec filesystem accepts them.

S3 endpoint and credentials come only from the usual AWS environment and config files
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ...) or an
explicit ``storage_options`` mapping; they are never logged or put in ``repr``.

Transient faults: s3fs retries only a few error classes, and botocore is set to a few quick
attempts (standard mode, 3), so every store operation goes through :meth:`StorageRoot.retrying`,
which retries connection errors, timeouts and 5xx/throttling answers with exponential backoff
(default 6 attempts, 0.2 s doubling to at most 5 s: an outage of several seconds is survived, and
each retry is logged).

Fast checks: :meth:`StorageRoot.check` fails at once, with one line naming the problem and the fix,
when a root cannot work (a ``file://`` root that is a file or not writable, an S3 endpoint that
does not answer), so that commands fail before parsing their input; :func:`redact` removes
credentials from any text shown to users.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import fsspec
from fsspec.spec import AbstractFileSystem

from storage.errors import StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")

SUPPORTED_PROTOCOLS = ("file", "s3", "memory")
DEFAULT_ROOT_ENV = "AIRREP_STORAGE_ROOT"
REPO_ROOT = Path(__file__).resolve().parents[1]

# botocore's own retries: few and quick (a refused connection fails in about a second), so that
# an outage shows up in our logged, longer backoff; AWS_MAX_ATTEMPTS / AWS_RETRY_MODE override.
BOTOCORE_RETRIES = {"mode": "standard", "max_attempts": 3}

_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EPIPE,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
}
_TRANSIENT_S3_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
}
# The reachability probe of an S3 root: one attempt, short timeouts (a refused connection fails at
# once, a silent host after PROBE_CONNECT_TIMEOUT_S).
PROBE_CONNECT_TIMEOUT_S = 3
PROBE_READ_TIMEOUT_S = 10
CREDENTIAL_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")
_URI_USERINFO_RE = re.compile(r"(://)[^/@\s]+@")

_PERMANENT_OS_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def is_transient_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception in its cause chain) is worth retrying.

    Transient: connection refused/reset, timeouts, botocore connection errors, S3 5xx and
    throttling answers. Permanent: missing/existing files, permissions, 4xx answers, bad input.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _PERMANENT_OS_ERRORS):
            return False
        if _is_transient_one(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_transient_one(exc: BaseException) -> bool:
    try:
        from botocore import exceptions as boto_exc
    except ImportError:  # s3fs not installed: only OS-level errors can occur
        boto_exc = None
    if boto_exc is not None:
        transient_boto = (
            boto_exc.EndpointConnectionError,
            boto_exc.ConnectionClosedError,
            boto_exc.ReadTimeoutError,
            boto_exc.ConnectTimeoutError,
            boto_exc.HTTPClientError,
        )
        if isinstance(exc, transient_boto):
            return True
        if isinstance(exc, boto_exc.ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return status >= 500 or error.get("Code") in _TRANSIENT_S3_CODES
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


class StorageRoot:
    """A storage location for artifacts.

    ``uri``: ``file:///abs/path`` or a plain path (made absolute), ``s3://bucket/prefix``, or
    ``memory://name`` (fsspec's in-process memory filesystem; for tests).
    ``storage_options``: extra keyword arguments for the fsspec filesystem (e.g. ``endpoint_url``
    or ``client_kwargs`` for s3fs); kept out of ``repr`` and logs.
    ``retries`` / ``retry_base_delay`` / ``retry_max_delay``: backoff of :meth:`retrying`.
    """

    def __init__(
        self,
        uri: str | os.PathLike[str],
        *,
        storage_options: Mapping[str, Any] | None = None,
        retries: int = 6,
        retry_base_delay: float = 0.2,
        retry_max_delay: float = 5.0,
    ) -> None:
        if retries < 1:
            raise ValueError(f"retries must be >= 1, got {retries}")
        self._uri, self._protocol = _normalise_uri(os.fspath(uri))
        self.retries = retries
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        self._storage_options = dict(storage_options or {})
        self._fs: AbstractFileSystem | None = None

    @property
    def uri(self) -> str:
        """The root URI, normalised (``file:///abs``, ``s3://bucket/prefix``, ``memory://name``)."""
        return self._uri

    @property
    def protocol(self) -> str:
        """``"file"``, ``"s3"`` or ``"memory"``."""
        return self._protocol

    @property
    def is_local(self) -> bool:
        """Whether artifacts are plain local directories (``file://``)."""
        return self._protocol == "file"

    @property
    def local_path(self) -> Path:
        """The root directory of a ``file://`` root; ``ValueError`` for remote roots."""
        if not self.is_local:
            raise ValueError(f"{self.uri} is not a local (file://) root")
        return Path(self._uri.removeprefix("file://"))

    @property
    def fs(self) -> AbstractFileSystem:
        """The fsspec filesystem (created on first use)."""
        if self._fs is None:
            self._fs = self._make_fs()
        return self._fs

    def join(self, *parts: str) -> str:
        """The URI of ``parts`` below the root, e.g. ``join("datasets", key, "x.parquet")``."""
        for part in parts:
            if not part or part.startswith("/") or ".." in part.split("/"):
                raise ValueError(f"bad path part {part!r}: must be non-empty and relative")
        return "/".join([self._uri.rstrip("/"), *(p.strip("/") for p in parts)])

    def retrying(self, operation: Callable[[], T], description: str) -> T:
        """Run ``operation()``, retrying transient faults (see :func:`is_transient_error`).

        Local roots run it once: a local disk has no transient faults worth waiting for.
        """
        attempts = 1 if self.is_local else self.retries
        for attempt in range(1, attempts + 1):
            try:
                return operation()
            except Exception as e:
                if attempt == attempts or not is_transient_error(e):
                    raise
                delay = min(self.retry_base_delay * 2 ** (attempt - 1), self.retry_max_delay)
                log.warning(
                    "%s failed (%s: %s); retry %d/%d in %.1fs",
                    description,
                    type(e).__name__,
                    e,
                    attempt,
                    attempts - 1,
                    delay,
                )
                self._refresh_after_fault()
                time.sleep(delay)
        raise AssertionError("unreachable")

    def check(self, *, writable: bool) -> None:
        """Fail fast, before any work, when the root cannot be used.

        ``file://``: the root (or, when it does not exist yet, its nearest existing ancestor) must
        be a folder, and with ``writable`` one this process may write (not on a read-only file
        system). ``s3://``: the bucket must answer one listing request within a few seconds (one
        attempt, no retries). ``memory://`` always passes. Raises :class:`StorageError` with one
        line naming the root, the problem and what to do; credentials never appear.
        """
        if self.is_local:
            _check_local_root(self.local_path, writable)
        elif self._protocol == "s3":
            self._probe_s3()

    def _probe_s3(self) -> None:
        bucket, _, prefix = self._uri.removeprefix("s3://").partition("/")
        options: dict[str, Any] = {"use_listings_cache": False, "skip_instance_cache": True}
        options.update(self._storage_options)
        options["config_kwargs"] = {
            **options.get("config_kwargs", {}),
            "connect_timeout": PROBE_CONNECT_TIMEOUT_S,
            "read_timeout": PROBE_READ_TIMEOUT_S,
            "retries": {"mode": "standard", "total_max_attempts": 1},
        }
        try:
            fs = fsspec.filesystem("s3", **options)
            fs.retries = 1  # s3fs's own retry loop
            fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except Exception as e:
            raise StorageError(
                redact(
                    f"storage root {self.uri} is not reachable ({_probe_reason(e)}); check "
                    "AWS_ENDPOINT_URL, the network and the bucket name, then run the command again"
                )
            ) from e

    def _refresh_after_fault(self) -> None:
        if self._fs is not None:
            self._fs.invalidate_cache()

    def _make_fs(self) -> AbstractFileSystem:
        if self._protocol == "s3":
            # Listings must not be cached: other processes publish artifacts concurrently.
            options: dict[str, Any] = {"use_listings_cache": False}
            if not (os.environ.get("AWS_MAX_ATTEMPTS") or os.environ.get("AWS_RETRY_MODE")):
                options["config_kwargs"] = {"retries": dict(BOTOCORE_RETRIES)}
            options.update(self._storage_options)
            return fsspec.filesystem("s3", **options)
        if self._protocol == "memory":
            return fsspec.filesystem("memory", **self._storage_options)
        return fsspec.filesystem("file", auto_mkdir=True, **self._storage_options)

    def __repr__(self) -> str:
        return f"StorageRoot({self._uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StorageRoot) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)


def nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def write_problem(folder: Path) -> str | None:
    """Why this process cannot create files in the existing ``folder`` ("is on a read-only file
    system", "is not writable by this user"), or None when it can."""
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        return "is on a read-only file system"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "is not writable by this user"
    return None


def _check_local_root(path: Path, writable: bool) -> None:
    existing = nearest_existing(path)
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is below {existing}, which is a file"
        raise StorageError(
            f"storage root {path} {where}, not a folder; give a folder (or a new path) as "
            f"--root or ${DEFAULT_ROOT_ENV}"
        )
    problem = write_problem(existing) if writable else None
    if problem is not None:
        shown = path if existing == path else f"{path} (its folder {existing})"
        raise StorageError(
            f"storage root {shown} {problem}; give a writable folder as --root or "
            f"${DEFAULT_ROOT_ENV}"
        )


def _probe_reason(exc: BaseException) -> str:
    """A short reason for a failed S3 probe (the exception's class and message, one line)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def redact(text: str) -> str:
    """``text`` without credentials: the values of the AWS credential variables of the
    environment, and the ``user:password@`` part of URIs, are replaced by ``***``."""
    for name in CREDENTIAL_ENV_VARS:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return _URI_USERINFO_RE.sub(r"\1***@", text)


def _normalise_uri(uri: str) -> tuple[str, str]:
    if not uri:
        raise ValueError("storage root URI is empty")
    if "://" not in uri:
        return f"file://{Path(uri).expanduser().resolve()}", "file"
    protocol, rest = uri.split("://", 1)
    if "@" in rest.split("/", 1)[0]:
        raise ValueError(
            f"{protocol}:// root names credentials (user:secret@): not supported, and never "
            "shown; give the bare URI and set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE)"
        )
    if protocol not in SUPPORTED_PROTOCOLS:
        raise ValueError(
            f"unsupported storage protocol {protocol!r} in {uri!r}; allowed: {SUPPORTED_PROTOCOLS}"
        )
    if protocol == "file":
        if not rest.startswith("/"):
            raise ValueError(f"file:// root must be an absolute path, got {uri!r}")
        return f"file://{Path(rest).resolve()}", "file"
    rest = rest.strip("/")
    if not rest:
        raise ValueError(f"{protocol}:// root needs a bucket or name, got {uri!r}")
    return f"{protocol}://{rest}", protocol


def default_root_uri() -> str:
    """``$AIRREP_STORAGE_ROOT``, else ``file://<repo>/artifacts`` (git-ignored)."""
    return os.environ.get(DEFAULT_ROOT_ENV) or f"file://{REPO_ROOT / 'artifacts'}"


def as_root(root: StorageRoot | str | os.PathLike[str] | None) -> StorageRoot:
    """``root`` as a :class:`StorageRoot`; ``None`` means :func:`default_root_uri`."""
    if isinstance(root, StorageRoot):
        return root
    return StorageRoot(default_root_uri() if root is None else root)
