"""Short stable hashes of JSON-able settings: a checkpoint's fingerprint, a backbone's `model_args`,
the report's config hash."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def settings_hash(settings: Any) -> str:
    """A short stable hash of JSON-able settings (for the report's provenance)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
