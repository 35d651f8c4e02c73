"""Writing a batch: user objects packed into documents, stored as pending batch deliveries.

A device's user objects stay in one document unless they alone exceed
`max_users_per_request`. Documents are written a few at a time
(`FLUSH_DOCUMENTS`, or `FLUSH_BYTES` of them), with their `DeliveryDevice`
rows, so that a batch of any size holds little in memory. They are stored
without a lease: `delivery.batch.transfers.send_batch_deliveries` leases them
as it sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils import timezone

from delivery import bulk
from delivery.models import BatchExit, Delivery, DeliveryDevice, DeliveryKind, DeliveryStatus
from delivery.sending.documents import UserEntry, build_document_of_entries
from destinations.models import Destination

FLUSH_DOCUMENTS = 100
FLUSH_BYTES = 4 * 1024 * 1024
DEVICE_ROWS_PER_INSERT = 10_000


@dataclass
class _Document:
    body: bytes
    user_count: int
    aam_uuids: list[str]
    exit_ids: list[int] = field(default_factory=list)


class BatchWriter:
    """Packs user objects into documents of at most the destination's `max_users_per_request`."""

    def __init__(self, *, destination: Destination) -> None:
        self.destination = destination
        self.limit = destination.max_users_per_request
        self.deliveries = 0  # documents stored
        self.users = 0  # user objects stored
        self.devices = 0  # devices (or erased devices' exits) added
        self._users: list[UserEntry] = []
        self._uuids: dict[str, None] = {}  # the devices of the document being packed, in order
        self._exit_ids: list[int] = []
        self._ready: list[_Document] = []
        self._ready_bytes = 0

    def add(self, aam_uuid: str, users: list[UserEntry], *, exit_id: int | None = None) -> None:
        """Add one device's user objects (`user_entry` dicts); `exit_id`: the `BatchExit` they come from."""
        if not users:
            return
        self.devices += 1
        if self._users and len(self._users) + len(users) > self.limit:
            self._close_document()
        for user in users:
            if len(self._users) == self.limit:
                self._close_document()
            self._users.append(user)
            self._uuids[aam_uuid] = None
        if exit_id is not None:
            self._exit_ids.append(exit_id)
        if len(self._users) == self.limit:
            self._close_document()

    def finish(self) -> None:
        """Store what is left."""
        if self._users:
            self._close_document()
        self._flush()

    def _close_document(self) -> None:
        destination = self.destination
        body = build_document_of_entries(
            user_dpid=destination.user_dpid,
            client_id=destination.client_id,
            aam_destination_id=destination.aam_destination_id,
            entries=self._users,
            process_time=timezone.now(),
        )
        self._ready.append(_Document(body, len(self._users), list(self._uuids), self._exit_ids))
        self._ready_bytes += len(body)
        self._users, self._uuids, self._exit_ids = [], {}, []
        if len(self._ready) >= FLUSH_DOCUMENTS or self._ready_bytes >= FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._ready:
            return
        deliveries = [
            Delivery(destination=self.destination, kind=DeliveryKind.BATCH, status=DeliveryStatus.PENDING,
                     body=document.body, user_count=document.user_count)
            for document in self._ready
        ]
        bulk.insert_bound(deliveries)
        stored = list(zip(deliveries, self._ready, strict=True))
        _store_devices([(delivery.pk, uuid) for delivery, document in stored for uuid in document.aam_uuids])
        for delivery, document in stored:
            if document.exit_ids:
                BatchExit.objects.filter(pk__in=document.exit_ids).update(delivery=delivery)
        self.deliveries += len(deliveries)
        self.users += sum(document.user_count for document in self._ready)
        self._ready, self._ready_bytes = [], 0


def _store_devices(rows: list[tuple[int, str]]) -> None:
    """Insert (delivery id, aam_uuid) `DeliveryDevice` rows."""
    bulk.insert_pairs(DeliveryDevice, columns=("delivery_id", "aam_uuid"), rows=rows,
                         batch_size=DEVICE_ROWS_PER_INSERT)
