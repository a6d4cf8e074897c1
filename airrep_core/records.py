"""``JsonRecord``: the one ``to_dict`` of the small result dataclasses (reports, references)."""

from __future__ import annotations

import dataclasses
from typing import Any


class JsonRecord:
    """Mixin for a dataclass whose fields hold JSON values (what a step reports or returns)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``dataclasses.asdict``: nested dataclasses become dicts too)."""
        return dataclasses.asdict(self)
