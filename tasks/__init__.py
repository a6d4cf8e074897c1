"""Pipeline steps. Each reads inputs from storage, calls one ``airrep_core`` function, writes its
outputs and returns a small reference (URI, content key, row count), never tensors or frames.

Placement rule: each Prefect ``@task`` sits in the same module as the plain step function it
wraps (``tasks/<step>.py``), so a flow reaches the core in two hops (flow → ``tasks/<step>.py``
→ ``airrep_core``) and the steps stay callable (and testable) without Prefect. Shared task
plumbing lives in ``caching``, ``monitoring``, ``references`` and ``retry``.
"""
