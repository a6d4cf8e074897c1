"""Attribution queries over stored embeddings: the ``AttributionIndex``
(attribute, group influence, selection), exact and IVF search, the hybrid score."""
