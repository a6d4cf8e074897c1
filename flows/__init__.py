"""Prefect flows composing the tasks, and the ``airrep`` command-line interface.

Prefect and transformers read their settings once, when they are first imported; the ``airrep``
CLI imports them only inside the commands that need them, so the settings below, set when this
package is first imported, are in place before. Each is a default the environment can override:

- ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=180``: the ephemeral server (``airrep run``
  without ``PREFECT_API_URL``) can take over 20 s, Prefect's default, to start on a loaded
  2-core machine.
- ``PREFECT_SERVER_ANALYTICS_ENABLED=false``: the ephemeral server's telemetry heartbeat writes
  to its SQLite database while the server creates its tables, and fails with "database is
  locked" (a traceback at the start of every first run); the pipeline sends no telemetry.
- ``HF_HUB_DISABLE_PROGRESS_BARS=1``: transformers draws a tqdm bar for every model load and save
  ("Loading weights", "Writing model shards"); the pipeline shows its own progress per stage.
"""

import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
