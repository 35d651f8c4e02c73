"""A partner down for M minutes: the attempts aamdest makes, breaker off and on, and the catch-up after.

    python scripts/bench_outage.py [--minutes 10] [--backlog 100000] [--rate 5]

It starts a stack of its own: the PostgreSQL database of `--database-url`
(dropped and recreated; default `h1`), the Redis DB of `--broker-url` (flushed;
default DB 1), 2 Celery workers and beat, and a local HTTPS partner in this
process that can be switched down (503) and up (200).

1. **Before** (`circuit_breaker` off, Adobe's rule): the partner is down for
   `--minutes`; meanwhile `--rate` devices a second qualify for the destination's
   segment. It counts the attempts the partner received.
2. **After** (`circuit_breaker` on, threshold 10): the same workload, another
   destination, the same count. The circuit opens and only probes reach the
   partner (at +30 s, +90 s, +210 s, +450 s, then every 15 min).
3. **Catch-up**: still down, `--backlog` more devices qualify (the backlog, with
   the outage's own devices). The partner comes back; it reports how long until
   the next probe closed the circuit (the probe schedule) and from then until the
   partner acknowledged the last backlog device (the drain, with the ramp).

Everything started is stopped at the end, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import ROOT, Children, bench_environment, note, reset_broker, reset_database  # noqa: E402

sys.path.insert(0, str(ROOT))
WORKERS = 2
SEGMENTS = {"before": 501, "after": 502}
CHUNK = 5_000


class Switch:
    """The partner's state, down or up; counts attempts while down, acknowledged devices while up."""

    def __init__(self) -> None:
        self.is_down = True
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.acknowledged: set[str] = set()
        self.last_ack_at = 0.0

    def answer(self, received):  # noqa: ANN001, ANN201 - tests.local_partner's types, imported late
        from tests.local_partner import Reply

        phase = received.path.rsplit("/", 1)[-1]
        with self.lock:
            if self.is_down:
                self.attempts[phase] = self.attempts.get(phase, 0) + 1
                return Reply(status=503, body=b"down")
            users = json.loads(received.body).get("Users", [])
            self.acknowledged.update(f"{phase}:{user['AAM_UUID']}" for user in users)
            self.last_ack_at = time.monotonic()
            return Reply()


def qualify(phase: str, uuids: list[str]) -> None:
    """Store qualifications of `uuids` in the phase's segment and wake the destinations, as the API does."""
    from django.utils import timezone

    from delivery.intake.events import Event, EventType
    from delivery.intake.membership import apply_events
    from delivery.realtime.scheduling import schedule_flushes

    now = timezone.now()
    events = [Event(type=EventType.QUALIFICATION, aam_uuid=uuid, datetime=now, segment_id=SEGMENTS[phase])
              for uuid in uuids]
    schedule_flushes(apply_events(events=events, now=now).destination_ids)


def make_destination(phase: str, *, url: str, breaker: bool) -> int:
    from destinations.models import Destination, Mapping, Segment

    destination = Destination.objects.create(
        name=f"outage-{phase}", url=f"{url}/{phase}", client_id="1", user_dpid=20914,
        aam_destination_id=len(phase), circuit_breaker=breaker,
    )
    segment, _ = Segment.objects.get_or_create(id=SEGMENTS[phase])
    Mapping.objects.create(destination=destination, segment=segment, value=str(segment.pk),
                           start_date=dt.date(2000, 1, 1))
    return destination.pk


def outage(phase: str, *, minutes: float, rate: int, switch: Switch) -> int:
    """Keep the partner down for `minutes` while `rate` devices a second qualify; return the attempts."""
    started = time.monotonic()
    second = 0
    while time.monotonic() - started < minutes * 60:
        qualify(phase, [f"{phase}-{second:06d}-{n}" for n in range(rate)])
        second += 1
        time.sleep(max(0.0, started + second - time.monotonic()))
    time.sleep(5)  # the last requests' attempts and retries
    with switch.lock:
        return switch.attempts.get(phase, 0)


def catch_up(destination_id: int, *, backlog: int, switch: Switch, give_up_s: float) -> dict[str, float]:
    """Add the backlog while down, bring the partner back, time the probe's close and the drain."""
    from delivery.models import DestinationDevice
    from destinations.models import CircuitState, Destination

    for start in range(0, backlog, CHUNK):
        qualify("after", [f"backlog-{n:07d}" for n in range(start, min(start + CHUNK, backlog))])
    pending = DestinationDevice.objects.filter(destination_id=destination_id, pending_since__isnull=False)
    expected = {f"after:{uuid}" for uuid in pending.values_list("device_id", flat=True)}
    note(f"backlog: {len(expected)} devices pending; the partner comes back")
    with switch.lock:
        switch.is_down = False
    back = time.monotonic()
    closed = None
    while time.monotonic() - back < give_up_s:
        if closed is None and Destination.objects.get(pk=destination_id).circuit_state == CircuitState.CLOSED:
            closed = time.monotonic()
        with switch.lock:
            if expected <= switch.acknowledged:
                break
        time.sleep(0.5)
    with switch.lock:
        lost = len(expected - switch.acknowledged)
        done = switch.last_ack_at
    return {"devices": len(expected), "lost": lost, "to_close_s": (closed or back) - back,
            "drain_s": done - (closed or back), "total_s": done - back}


def start_stack(children: Children, env: dict[str, str], directory: Path) -> None:
    celery = str(Path(sys.executable).with_name("celery"))
    for index in range(WORKERS):
        children.start(f"worker{index}", [celery, "-A", "aamdest", "worker", "--hostname", f"w{index}@bench",
                                          "--loglevel", "WARNING"], env=env, is_echoed=False)
    children.start("beat", [celery, "-A", "aamdest", "beat", "--schedule", str(directory / "beat"),
                            "--loglevel", "WARNING"], env=env, is_echoed=False)
    time.sleep(8)  # the workers connect to the broker


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the partner is down [10]")
    parser.add_argument("--backlog", type=int, default=100_000, help="devices pending at recovery [100000]")
    parser.add_argument("--rate", type=int, default=5, help="devices qualifying a second when down")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/h1")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/1")
    parser.add_argument("--give-up-s", type=float, default=1800.0)
    return parser.parse_args()


def main() -> None:
    args = parse()
    directory = Path(tempfile.mkdtemp(prefix="bench-outage-"))
    env = bench_environment(database_url=args.database_url, broker_url=args.broker_url)
    reset_database(args.database_url)
    reset_broker(args.broker_url)
    from partner.certificates import write_certificates

    certificates = write_certificates(directory)
    env["AAMDEST_CA_BUNDLE"] = str(certificates.ca_file)
    os.environ.update(env, DJANGO_SETTINGS_MODULE="aamdest.settings")
    import django

    django.setup()
    from tests.local_partner import start_partner

    children = Children()
    switch = Switch()
    partner = start_partner(certificates)
    partner.responder = switch.answer
    try:
        migrate = [sys.executable, "manage.py", "migrate", "--noinput"]
        children.run("migrate", migrate, env=env, is_echoed=False)
        start_stack(children, env, directory)
        report(args, switch, partner.url.rsplit("/", 1)[0])
    finally:
        children.stop()
        partner.stop()


def report(args: argparse.Namespace, switch: Switch, url: str) -> None:
    make_destination("before", url=url, breaker=False)
    before = outage("before", minutes=args.minutes, rate=args.rate, switch=switch)
    note(f"before (breaker off): {before} attempts in {args.minutes:g} min down")
    after_id = make_destination("after", url=url, breaker=True)
    after = outage("after", minutes=args.minutes, rate=args.rate, switch=switch)
    note(f"after (breaker on): {after} attempts in {args.minutes:g} min down")
    drain = catch_up(after_id, backlog=args.backlog, switch=switch, give_up_s=args.give_up_s)
    load = os.getloadavg()
    print(json.dumps({"minutes_down": args.minutes, "rate_per_s": args.rate,
                      "attempts_breaker_off": before, "attempts_breaker_on": after, **drain,
                      "load_average": [round(value, 2) for value in load]}))


if __name__ == "__main__":
    main()
