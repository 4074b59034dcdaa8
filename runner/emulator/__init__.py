"""A local Amazon Bedrock for Claude: runtime, control plane, scriptable faults and billing counters.

It speaks Bedrock's wire protocol closely enough that an unmodified aioboto3 / boto3 client cannot
tell (SigV4-signed requests, ``x-amzn-ErrorType`` errors, token headers), answers deterministically
from a seed, and misbehaves on request: latency, throttling, a tokens-per-minute quota, 5xx, outages,
access denied, cut-off and slow answers. Only :mod:`runner.catalog` is shared with the runner, so the
emulator catches the runner's wire bugs instead of repeating them. See ``docs/emulator.md``.

Three ways to run it::

    async with serve(config) as emu: ...            # inside an asyncio / anyio loop
    with EmulatorThread(config) as emu: ...         # sync code: its own loop in a thread
    python -m runner.emulator --port 8000           # a process (``bedrock-batch emulator``)
"""

from __future__ import annotations

from runner.emulator.cli import emulator_command, main, run_emulator
from runner.emulator.config import (
    ConfigError,
    EmulatorConfig,
    FaultSettings,
    Latency,
    Outage,
    OutputTokens,
    RouteRule,
    ScriptedOutcome,
)
from runner.emulator.errors import ERRORS, BedrockError
from runner.emulator.server import Emulator, serve
from runner.emulator.thread import EmulatorThread

__all__ = [
    "ERRORS",
    "BedrockError",
    "ConfigError",
    "Emulator",
    "EmulatorConfig",
    "EmulatorThread",
    "FaultSettings",
    "Latency",
    "Outage",
    "OutputTokens",
    "RouteRule",
    "ScriptedOutcome",
    "emulator_command",
    "main",
    "run_emulator",
    "serve",
]
