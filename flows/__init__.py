"""Prefect flows composing the tasks, and the ``airrep`` command-line interface."""
