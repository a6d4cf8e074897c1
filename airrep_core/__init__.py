"""AirRep core: the method, LM fine-tuning and loss evaluation, training, scoring, evaluation.

Plain PyTorch / transformers / numpy. Imports no ``prefect``, no ``fsspec``, no ``storage``
(DESIGN.md §4), so everything here is usable from a notebook.
"""

__version__ = "0.1.0"
