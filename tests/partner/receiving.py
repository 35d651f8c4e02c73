"""What the partner tests send and how they reach a running receiver.

`DOCUMENT` is a valid document of CONTRACT §1 (the spec's example); `Running` is a
receiver started by the `start_receiver` fixture, with the lines it printed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from partner.server import ReceiverServer

DOCUMENT: dict[str, Any] = {
    "ProcessTime": "Wed Jul 27 16:17:42 UTC 2016",
    "User_DPID": "20914",
    "Client_ID": "74323",
    "AAM_Destination_Id": "423",
    "User_count": "2",
    "Users": [
        {
            "AAM_UUID": "19393572368547369350319949416899715727",
            "DataPartner_UUID": "4250948725049857",
            "AAM_Regions": ["9"],
            "Segments": [
                {"Segment_ID": "14356", "Status": "1", "DateTime": "Wed Jul 27 16:17:22 UTC 2016"},
                {"Segment_ID": "12176", "Status": "0", "DateTime": "Wed Jul 27 16:17:22 UTC 2016"},
            ],
        },
        {
            "AAM_UUID": "0578240750487542456854736923319946899715232",
            "DataPartner_UUID": "",
            "AAM_Regions": ["6", "9"],
            "Segments": [{"Segment_ID": "10329", "Status": "1", "DateTime": "Wed Jul 27 16:17:21 UTC 2016"}],
        },
    ],
}
BODY = json.dumps(DOCUMENT).encode()
JSON = {"Content-Type": "application/json"}


def hmac_base64(*, body: bytes, key: str, digest: str = "sha256") -> str:
    return base64.b64encode(hmac.new(key.encode(), body, getattr(hashlib, digest)).digest()).decode()


@dataclass
class Running:
    server: ReceiverServer
    ca_file: Path | None
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def post(self, body: bytes = BODY, *, path: str = "aam", **kwargs: Any) -> requests.Response:
        kwargs.setdefault("headers", JSON)
        return requests.post(f"{self.url}{path}", data=body, verify=str(self.ca_file), timeout=5, **kwargs)
