"""Name resolution for tests: the sandbox has no DNS, so tests answer for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from unittest import mock

from destinations import network

Resolver = Callable[[str, int], list[str]]


@contextmanager
def use_resolver(resolver: Resolver) -> Iterator[None]:
    """Resolve names with `resolver` inside the block, in every thread (HTTP resolves in a pool)."""
    with mock.patch.object(network, "resolve_host", resolver):
        yield
