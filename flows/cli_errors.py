"""The CLI's error boundary: every failure a command does not handle itself ends as one line.

:class:`GuardedTyper` is the ``airrep`` app's class: run as a program, an exception escaping a
command (an OS error, an S3 fault, a configuration mistake) prints one line on stderr, naming what
failed and what to do, and exits with status 1; credentials are redacted (:func:`storage.root.redact`).
``airrep --debug COMMAND ...`` or ``AIRREP_DEBUG=1`` shows the traceback instead. Typer's
``CliRunner`` (tests) calls the command directly and sees the exception unchanged.

:func:`open_checked_store` opens a command's store after the fast root checks of
:meth:`storage.root.StorageRoot.check` (root a folder, writable, bucket reachable), and
:func:`check_output_path` checks an output file's folder, so that commands fail before they parse
their input.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from storage.artifacts import ArtifactStore
from storage.root import (
    StorageRoot,
    default_root_uri,
    is_transient_error,
    nearest_existing,
    redact,
    write_problem,
)

DEBUG_ENV = "AIRREP_DEBUG"
EXIT_FAILURE = 1


def debug_enabled() -> bool:
    """Whether tracebacks are wanted (``--debug`` or ``AIRREP_DEBUG`` set to a non-empty, non-0 value)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


class _NoPrefectFailures(logging.Filter):
    """Drops Prefect's own ERROR records (a failed task or flow run, with its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.name.startswith("prefect"))


def failures_to_the_boundary() -> None:
    """Leave a failed run's report to the error boundary's one line: Prefect's console handlers
    stop printing its failure records and their tracebacks (they still reach the Prefect API and
    UI); ``--debug`` keeps them. Call after Prefect is imported (it configures logging then)."""
    if debug_enabled():
        return
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler):
                handler.addFilter(_NoPrefectFailures())


def _debug_option(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help=f"Show the traceback of a failure (also ${DEBUG_ENV}=1).", is_eager=True
        ),
    ] = False,
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


class GuardedTyper(typer.Typer):
    """A Typer app with the global ``--debug`` option whose run ends every failure in one line."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.callback()(_debug_option)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return typer.main.get_command(self)(*args, **kwargs)
        except Exception as e:
            if debug_enabled():
                raise
            print(f"error: {describe(e)}", file=sys.stderr)
            sys.exit(EXIT_FAILURE)


@contextmanager
def clear_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Turn the ``kinds`` of errors a command expects (bad input, storage, configuration) into
    one red line on stderr (a ``KeyError``'s own text, unquoted) and exit status 1; ``--debug``
    lets them through with their traceback."""
    try:
        yield
    except kinds as e:
        if debug_enabled():
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        Console(stderr=True).print(
            f"[bold red]error:[/] {escape(str(message))}",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FAILURE) from e


def describe(exc: BaseException) -> str:
    """One line saying what failed and what to do, for any exception; credentials redacted."""
    return redact(" ".join(f"{_what_failed(exc)} (run with --debug for the traceback)".split()))


def _what_failed(exc: BaseException) -> str:
    boto_text = _s3_failure(exc)
    if boto_text is not None:
        return boto_text
    if isinstance(exc, OSError) and exc.errno is not None:
        where = exc.filename if exc.filename is not None else "(no file name)"
        if exc.errno == errno.EROFS:
            return f"cannot write {where}: read-only file system; use a writable folder"
        if isinstance(exc, PermissionError):
            return f"cannot access {where}: permission denied; use a folder this user may write"
        if isinstance(exc, NotADirectoryError):
            return f"{where}: a part of this path is a file, not a folder; choose another path"
        if isinstance(exc, FileExistsError):
            return f"{where} exists and is not a folder; choose another path"
        if exc.errno == errno.ENOSPC:
            return f"cannot write {where}: no space left on the device; free space and retry"
        return f"{where}: {exc.strerror}"
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    text = str(exc)
    if isinstance(exc, ValueError | TypeError) and text:
        return text
    return f"unexpected {type(exc).__name__}: {text}"


def _s3_failure(exc: BaseException) -> str | None:
    """The line of an S3 client error (unreachable endpoint, missing credentials, refused request)."""
    try:
        from botocore import exceptions as boto_exc
    except ImportError:
        return None
    if isinstance(exc, boto_exc.NoCredentialsError | boto_exc.PartialCredentialsError):
        return (
            "no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE)"
        )
    if isinstance(exc, boto_exc.ClientError):
        error = exc.response.get("Error", {})
        return (
            f"S3 refused the request ({error.get('Code', '?')}: {error.get('Message', '')}); "
            "check the bucket name and the credentials' rights"
        )
    if isinstance(exc, boto_exc.BotoCoreError) or (
        is_transient_error(exc) and not isinstance(exc, OSError)
    ):
        return (
            f"the storage did not answer ({type(exc).__name__}: {exc}); check AWS_ENDPOINT_URL "
            "and the network, then run the command again"
        )
    return None


def open_checked_store(root: str | None, *, writable: bool) -> ArtifactStore:
    """The store at ``root`` (default ``$AIRREP_STORAGE_ROOT``) once its fast checks pass
    (:meth:`StorageRoot.check`); ``writable`` for commands that publish artifacts."""
    storage_root = StorageRoot(root or default_root_uri())
    storage_root.check(writable=writable)
    return ArtifactStore(storage_root)


def check_output_path(path: Path) -> None:
    """Raise ``ValueError`` naming ``path`` when it cannot be written as a file: it is a folder,
    or its folder (or the nearest existing one above it) is a file or not writable."""
    if path.is_dir():
        raise ValueError(f"output {path} is a folder; give a file path")
    existing = nearest_existing(path.parent)
    if not existing.is_dir():
        raise ValueError(f"output {path}: {existing} is a file, not a folder; choose another path")
    problem = write_problem(existing)
    if problem is not None:
        raise ValueError(f"output {path}: {existing} {problem}; choose another path")
