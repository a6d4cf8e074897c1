"""Artifact storage: storage roots (file://, s3://, memory://), content-addressed artifacts with
manifests, Arrow schemas of the core tables, versioned datasets and the embedding store.

Modules:

- ``root``: :class:`~storage.root.StorageRoot` (URI + fsspec filesystem, retries of transient
  S3 faults) and the default root (``$AIRREP_STORAGE_ROOT`` or ``file://<repo>/artifacts``).
- ``artifacts``: ``content_key`` and :class:`~storage.artifacts.ArtifactStore` (build / get /
  list / open / local_dir / delete; manifest written last; safe against concurrent builders).
- ``schemas`` / ``tables``: the core tables' Arrow schemas, ``validate``, Parquet
  ``write_table`` / ``read_table`` and lazy ``scan_tables`` (polars).
- ``formats`` / ``shapes`` / ``datasets``: reading JSONL / JSON / gzip / CSV / Parquet records,
  the detection table of record shapes (``DETECTION_RULES``), and versioned dataset import
  (``import_dataset``, ``read_examples``).
- ``sample_data``: the sample datasets of ``$AIRREP_DATA_DIR`` (default ``../shared/data``).
- ``errors``: ``StorageError``, ``ArtifactNotFound``, ``ArtifactConflict``, ``DataValidationError``.

Imports no ``torch`` and no ``prefect`` (DESIGN.md §4).
"""
