"""``python -m runner.cli``: the same as the ``bedrock-batch`` console script."""

from __future__ import annotations

import sys

from runner.cli import main

sys.exit(main())
