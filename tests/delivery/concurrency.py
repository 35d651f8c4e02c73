"""Another transaction, held open on another thread and connection while a test acts beside it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.db import connection, transaction


@contextmanager
def held_in_another_transaction(work: Callable[[], object]) -> Iterator[None]:
    """Run `work` in a transaction on another thread; it commits when the block ends."""
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                work()
                started.set()
                release.wait(10)
        finally:
            started.set()
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    started.wait(10)
    try:
        yield
    finally:
        release.set()
        holder.join()
