"""Prompt caching: creation the first time a prefix is seen, reads after, as Claude's ``cache_control`` does.

A prefix is identified by a running hash over the request's blocks in cache order (tools, system,
messages), computed by :mod:`runner.emulator.wire` without the ``cache_control`` markers, so moving a
breakpoint later in a conversation still hits the prefix written earlier (Claude looks back over
earlier block boundaries the same way). Scoped per model, like the real cache. Pure apart from the
dictionary it owns: time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_ENTRIES = 200_000
"""Bound on remembered prefixes, so a long benchmark cannot grow the emulator without limit."""


@dataclass(frozen=True, slots=True)
class CachePoint:
    """A block boundary of the prompt: the prefix hash up to it and its token count."""

    digest: bytes
    tokens: int
    breakpoint: bool
    ttl_s: float | None = None
    """The ``cache_control`` ttl at a breakpoint (``None``: the emulator's default)."""


@dataclass(frozen=True, slots=True)
class CacheUse:
    """How a request's prompt splits: tokens read from the cache and tokens written to it."""

    read: int = 0
    write: int = 0


NO_CACHE = CacheUse()


class PromptCache:
    """Remembered prefixes with their expiry, per model."""

    __slots__ = ("_entries", "max_entries", "min_tokens", "ttl_s")

    def __init__(self, *, ttl_s: float = 300.0, min_tokens: int = 0, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self.min_tokens = min_tokens
        self.max_entries = max_entries
        self._entries: dict[tuple[str, bytes], float] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, model: str, points: tuple[CachePoint, ...], now: float) -> CacheUse:
        """Split the prompt: the longest cached prefix is read, the rest up to the last breakpoint written."""
        if not points:
            return NO_CACHE
        read = 0
        for point in reversed(points):
            expires = self._entries.get((model, point.digest))
            if expires is not None and expires > now:
                read = point.tokens
                break
        last = points[-1]
        write = last.tokens - read if last.tokens > read and last.tokens >= self.min_tokens else 0
        return CacheUse(read, write)

    def store(self, model: str, points: tuple[CachePoint, ...], now: float) -> None:
        """Remember every breakpoint prefix (refreshing the ones already there), evicting the oldest."""
        entries = self._entries
        for point in points:
            if not point.breakpoint or point.tokens < self.min_tokens:
                continue
            key = (model, point.digest)
            entries.pop(key, None)
            entries[key] = now + (self.ttl_s if point.ttl_s is None else point.ttl_s)
        while len(entries) > self.max_entries:
            del entries[next(iter(entries))]

    def clear(self) -> None:
        self._entries.clear()
