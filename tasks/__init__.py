"""Pipeline steps. Each reads inputs from storage, calls one ``airrep_core`` function, writes its
outputs and returns a small reference (URI, content key, row count), never tensors or frames.

Plain step functions live beside their Prefect ``@task`` wrappers, so that the steps are callable
(and testable) without Prefect.
"""
