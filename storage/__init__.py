"""Artifact storage: storage roots (file://, s3://, memory://), content-addressed artifacts with
manifests, Arrow schemas of the core tables, versioned datasets and the embedding store.

Imports no ``torch`` and no ``prefect`` (DESIGN.md §4).
"""
