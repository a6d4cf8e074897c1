"""Prefect flows composing the tasks, and the ``airrep`` command-line interface.

Prefect reads its settings once, when it is first imported; importing any module of this package
imports Prefect. The ephemeral server (``airrep run`` without ``PREFECT_API_URL``) can take over
20 s, Prefect's default start-up timeout, to start on a loaded 2-core machine, so the timeout is
raised here, before that first import, unless the environment sets it.
"""

import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
