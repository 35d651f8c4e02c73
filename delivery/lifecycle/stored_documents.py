"""Erased devices leave the stored documents (CONTRACT §4): the bodies of ended deliveries that carried them.

`delivery.lifecycle.erasure` calls these under the device's lock. A pending
delivery is never rewritten: its retries must send the same bytes, so an
erasure waits for it.
"""

from __future__ import annotations

import orjson
from django.db import transaction

from delivery.models import BatchExit, Delivery, DeliveryDevice, DeliveryStatus, Device


def lock_ended_deliveries(uuids: list[str]) -> list[int]:
    """Lock the ended deliveries carrying `uuids`, in id order; return their ids.

    Taken before looking for pending deliveries: a redelivery being made of one
    of them then waits, and copies the rewritten body and rows.
    """
    delivery_ids = (
        DeliveryDevice.objects.filter(aam_uuid__in=uuids)
        .exclude(delivery__status=DeliveryStatus.PENDING)
        .values_list("delivery_id", flat=True)
    )
    locked = Delivery.objects.filter(pk__in=delivery_ids).order_by("pk").select_for_update()
    return list(locked.values_list("pk", flat=True))


def remove_from_documents(*, delivery_ids: list[int], uuids: list[str]) -> int:
    """Rewrite those of the (locked, ended) deliveries that carry `uuids` without them; return how many.

    `User_count` and `user_count` follow; their `DeliveryDevice` rows go. Bodies
    are read one at a time, so a device in many large batch documents costs
    one document's memory. Retries never see it: no pending delivery is touched.
    """
    removed = set(uuids)
    carrying = sorted(set(
        DeliveryDevice.objects.filter(delivery_id__in=delivery_ids, aam_uuid__in=uuids)
        .values_list("delivery_id", flat=True)
    ))
    for delivery_id in carrying:
        body = Delivery.objects.filter(pk=delivery_id).values_list("body", flat=True).first()
        if body is None:
            continue
        document = orjson.loads(bytes(body))
        users = [user for user in document["Users"] if user.get("AAM_UUID") not in removed]
        document["Users"], document["User_count"] = users, str(len(users))
        Delivery.objects.filter(pk=delivery_id).update(body=orjson.dumps(document), user_count=len(users))
    DeliveryDevice.objects.filter(delivery_id__in=carrying, aam_uuid__in=uuids).delete()
    return len(carrying)


def remove_carried_exits() -> int:
    """Take erased devices out of the ended batch deliveries that carried their exits; return how many.

    A device that came back since (the same AAM UUID, a new device) stays: its
    own data may be in that document too.
    """
    done = BatchExit.objects.filter(delivery__isnull=False).exclude(delivery__status=DeliveryStatus.PENDING)
    rewritten = 0
    for delivery_id in sorted(set(done.values_list("delivery_id", flat=True))):
        with transaction.atomic():
            list(Delivery.objects.filter(pk=delivery_id).select_for_update().values_list("pk"))
            exits = list(done.filter(delivery_id=delivery_id).values_list("pk", "aam_uuid"))
            uuids = {uuid for _, uuid in exits}
            returned = set(Device.objects.filter(aam_uuid__in=uuids).values_list("aam_uuid", flat=True))
            if uuids - returned:
                rewritten += remove_from_documents(delivery_ids=[delivery_id], uuids=sorted(uuids - returned))
            BatchExit.objects.filter(pk__in=[pk for pk, _ in exits]).delete()
    return rewritten
