"""bedrock-batch: run large prompt datasets through Claude on Amazon Bedrock."""

from __future__ import annotations

__version__ = "0.1.0"
