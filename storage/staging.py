"""Staging folders of artifact builds and the leftovers that killed builds leave (DESIGN.md §4).

A build writes its files into a staging folder named after its owner, ``<pid>@<host>``: on a
local root ``S/.staging/<attempt>.<pid>@<host>`` inside the root, on a remote root
``$TMPDIR/airrep-build-<pid>@<host>.<random>``. A staging folder whose owner is a process of this
host that is gone is stale at once; any other one (another host, an older layout) once untouched
for ``STALE_STAGING_AGE_S``. In a key folder, an attempt folder that the manifest does not name and
a pending manifest are stale after that age too. :class:`storage.artifacts.ArtifactStore` finds
them with these functions (``stale_staging``) and removes them (``remove_stale``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

STAGING_DIR = ".staging"
STALE_STAGING_AGE_S = 24 * 3600
REMOTE_STAGING_PREFIX = "airrep-build-"

_ATTEMPT_RE = re.compile(r"^a[0-9a-f]{16}$")
_OWNER_RE = re.compile(r"(\d+)@([A-Za-z0-9-]+)")


@dataclasses.dataclass(frozen=True)
class StaleEntry:
    """A leftover of a killed or failed build: ``path`` (a local path or a URI), why it is stale,
    and its size in bytes."""

    path: str
    reason: str
    size: int


def new_attempt() -> str:
    """A fresh attempt folder name: ``a`` and 16 hex digits."""
    return f"a{uuid.uuid4().hex[:16]}"


def make_staging(stage_dir: Path | None, attempt: str) -> Path:
    """A new, empty staging folder owned by this process: in ``stage_dir/.staging`` for a local
    root, or (``stage_dir`` None, a remote root) in ``$TMPDIR``."""
    if stage_dir is None:
        return Path(tempfile.mkdtemp(prefix=f"{REMOTE_STAGING_PREFIX}{_owner_tag()}."))
    staging = stage_dir / STAGING_DIR / f"{attempt}.{_owner_tag()}"
    staging.mkdir(parents=True)
    return staging


def host_tag() -> str:
    """This host's name reduced to ``[A-Za-z0-9-]`` (the ``<host>`` of staging folder names)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def stale_remote_staging(now: float, max_age_s: float) -> list[StaleEntry]:
    """The stale ``$TMPDIR`` staging folders of remote-root builds."""
    return _stale_children(Path(tempfile.gettempdir()), REMOTE_STAGING_PREFIX, now, max_age_s)


def stale_local_staging(stage_dir: Path, now: float, max_age_s: float) -> list[StaleEntry]:
    """The stale staging folders of one stage of a local root."""
    return _stale_children(stage_dir / STAGING_DIR, "", now, max_age_s)


def stale_orphans(
    stage_dir: Path,
    manifest_name: str,
    is_key: Callable[[str], object],
    now: float,
    max_age_s: float,
) -> list[StaleEntry]:
    """In the key folders of one stage (subfolders whose name passes ``is_key``): attempt folders
    that the key's manifest (``manifest_name``, JSON with an ``attempt``) does not name, and
    pending manifests (``.<manifest_name>.*``), untouched for more than ``max_age_s``."""
    found = []
    for key_dir in stage_dir.glob("*"):
        if not (key_dir.is_dir() and is_key(key_dir.name)):
            continue
        try:
            named = json.loads((key_dir / manifest_name).read_bytes())["attempt"]
        except (FileNotFoundError, ValueError, KeyError):
            named = None
        for child in key_dir.iterdir():
            pending = child.name.startswith(f".{manifest_name}.")
            orphan = _ATTEMPT_RE.match(child.name) and child.name != named
            if not (pending or orphan):  # the published attempt: not walked for its age
                continue
            age = now - _newest_mtime(child)
            if age > max_age_s:
                what = "pending manifest" if pending else "attempt no manifest names"
                reason = f"{what}, untouched for {age / 3600:.1f} h"
                found.append(StaleEntry(str(child), reason, _size(child)))
    return found


def remove_stale(entries: Sequence[StaleEntry]) -> None:
    """Remove ``entries``; ones already gone are skipped."""
    for entry in entries:
        path = Path(entry.path)
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def _owner_tag() -> str:
    """``<pid>@<host>`` of this process (the host name reduced to ``[A-Za-z0-9-]``)."""
    return f"{os.getpid()}@{host_tag()}"


def _stale_children(folder: Path, prefix: str, now: float, max_age_s: float) -> list[StaleEntry]:
    """The stale staging folders in ``folder`` whose names start with ``prefix``: their owner
    (``<pid>@<host>`` in the name) is a process of this host that is gone, or, with no owner of
    this host, they are untouched for more than ``max_age_s``."""
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        if not child.name.startswith(prefix):
            continue
        # local: "<attempt>.<pid>@<host>"; remote: "<prefix><pid>@<host>.<random>"
        text = (
            child.name.removeprefix(prefix).rsplit(".", 1)[0]
            if prefix
            else child.name.partition(".")[2]
        )
        owner = _OWNER_RE.fullmatch(text)
        if owner is not None and owner.group(2) == host_tag():
            if _alive(int(owner.group(1))):
                continue
            reason = f"its build process {owner.group(1)} is gone"
        else:
            age = now - _newest_mtime(child)
            if age <= max_age_s:
                continue
            reason = f"untouched for {age / 3600:.1f} h"
        found.append(StaleEntry(str(child), reason, _size(child)))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _newest_mtime(path: Path) -> float:
    """The newest modification time of ``path`` and, for a folder, everything below it."""
    times = [path.lstat().st_mtime]
    if path.is_dir():
        times += [p.lstat().st_mtime for p in path.rglob("*")]
    return max(times)


def _size(path: Path) -> int:
    if not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file())
