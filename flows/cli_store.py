"""``airrep store ...``: upkeep of a storage root.

``gc [--dry-run] [--older-than HOURS]`` lists and removes the leftovers of killed builds
(:meth:`storage.artifacts.ArtifactStore.stale_staging`): staging folders whose build process is
gone, and staging folders, unnamed attempt folders and pending manifests untouched for longer
than ``--older-than`` hours. Published artifacts are never touched.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from flows.cli_errors import open_checked_store
from storage.staging import STALE_STAGING_AGE_S

store_app = typer.Typer(help="Upkeep of a storage root (leftovers of killed builds).")
console = Console(soft_wrap=True, highlight=False)


@store_app.command("gc")
def gc_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")
    ] = False,
    older_than: Annotated[
        float,
        typer.Option(
            "--older-than",
            help="Hours after which a leftover of unknown builder (another host) is stale.",
        ),
    ] = STALE_STAGING_AGE_S / 3600,
    root: Annotated[
        str | None,
        typer.Option(
            "--root", help="Storage root URI (file://, s3://); default $AIRREP_STORAGE_ROOT."
        ),
    ] = None,
) -> None:
    """Remove (or with --dry-run list) the leftovers of killed builds."""
    store = open_checked_store(root, writable=not dry_run)
    entries = store.stale_staging(max_age_s=older_than * 3600)
    verb = "would remove" if dry_run else "removed"
    if not dry_run:
        store.remove_stale(entries)
    for entry in entries:
        console.print(f"{verb} {entry.path} ({entry.reason}; {entry.size:,} bytes)")
    total = sum(e.size for e in entries)
    console.print(f"{len(entries)} leftovers, {total:,} bytes {verb} in {store.root.uri}")
