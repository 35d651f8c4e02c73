"""Each hypothesis example starts from the same database: its writes are rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import transaction


@contextmanager
def rolled_back() -> Iterator[None]:
    """Run the block in a savepoint that is rolled back, whatever happens inside."""
    with transaction.atomic():
        try:
            yield
        finally:
            transaction.set_rollback(True)
