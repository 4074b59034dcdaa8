"""The emulator on its own event loop in a background thread, for sync tests, CLI tests and benchmarks.

A sync caller (a pytest fixture, a benchmark driving a subprocess) cannot ``async with serve()``; this
runs the same :class:`~runner.emulator.server.Emulator` on a private loop and marshals every state call
onto that loop, so the emulator's single-threaded state is never touched from two threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from runner.emulator.config import EmulatorConfig
from runner.emulator.server import Emulator

T = TypeVar("T")

START_TIMEOUT_S = 10.0


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel and await what is still pending (as ``asyncio.run`` does), so closing the loop is quiet."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


class EmulatorThread:
    """``with EmulatorThread(config) as emu: boto3.client(..., endpoint_url=emu.url)``."""

    def __init__(
        self, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.emulator = Emulator(config, host=host, port=port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.emulator.url

    @property
    def port(self) -> int:
        return self.emulator.port

    def start(self) -> EmulatorThread:
        """Start the thread and wait until the socket accepts connections (errors re-raised here)."""
        if self._thread is not None:
            raise RuntimeError("the emulator thread is already running")
        self._thread = threading.Thread(target=self._main, name="bedrock-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise RuntimeError("the emulator did not start in time")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self.emulator.start())
            except BaseException as exc:  # reported to start()'s caller
                self._error = exc
                return
            self._loop = loop
            self._started.set()
            loop.run_forever()
            loop.run_until_complete(self.emulator.aclose())
            _cancel_remaining(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            self._started.set()
            loop.close()

    def stop(self) -> None:
        """Stop serving and join the thread; safe to call twice."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(START_TIMEOUT_S)

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the emulator's loop and return its result (exceptions propagate)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the emulator thread is not running")
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(START_TIMEOUT_S)

    def counters(self) -> dict[str, Any]:
        return self.call(self.emulator.counters)

    def set_faults(self, data: Mapping[str, Any] | EmulatorConfig, *, merge: bool = False) -> EmulatorConfig:
        return self.call(lambda: self.emulator.set_faults(data, merge=merge))

    def script(self, profile: str, region: str, outcomes: list[Any]) -> int:
        return self.call(lambda: self.emulator.script(profile, region, outcomes))

    def reset(self, *, faults: bool = True) -> None:
        self.call(lambda: self.emulator.reset(faults=faults))

    @property
    def config(self) -> EmulatorConfig:
        return self.emulator.config
