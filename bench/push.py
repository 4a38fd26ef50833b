"""10,000 notifications through the real APNs client to the local APNs (HTTP/2 over TLS).

Sent one at a time, as the delivery job sends today, and with many streams
in flight on the one connection, which HTTP/2 allows: the gap between the
two says what concurrent sending would gain.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import httpx

from service.logs import configure_logging
from service.push.apns import APNsProvider
from service.push.base import PushMessage, PushTarget
from tests.support.apns import FakeAPNs
from tests.support.credentials import LocalTLS, apns_key

KEY_ID, TEAM_ID, TOPIC = "KEY1234567", "TEAM123456", "app.kindsync.ios"


async def run(count: int, in_flight: int) -> float:
    tls = LocalTLS()
    private_pem, public_pem = apns_key()
    fake = FakeAPNs(public_key_pem=public_pem, key_id=KEY_ID, team_id=TEAM_ID, topic=TOPIC)
    url = await fake.start(tls.server)
    targets = [PushTarget(device_id=uuid.uuid4(), platform="ios", token=f"{n:064x}") for n in range(count)]
    message = PushMessage.for_kind("weekly_insight_ready", None, "weekly_insight_ready:bench")
    try:
        async with httpx.AsyncClient(http2=True, verify=tls.client, limits=httpx.Limits(max_connections=1)) as client:
            provider = APNsProvider(
                url=url, key_id=KEY_ID, team_id=TEAM_ID, topic=TOPIC, private_key=private_pem, client=client
            )
            gate = asyncio.Semaphore(in_flight)

            async def one(target: PushTarget) -> bool:
                async with gate:
                    return (await provider.send(target, message)).ok

            started = time.perf_counter()
            results = await asyncio.gather(*(one(t) for t in targets))
            seconds = time.perf_counter() - started
    finally:
        await fake.stop()
    if not all(results) or len(fake.received) != count:
        raise SystemExit(f"{results.count(False)} of {count} pushes failed")
    return count / seconds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()
    configure_logging("WARNING")
    one_at_a_time = await run(args.count, 1)
    multiplexed = await run(args.count, 50)
    print(f"\npush: {args.count:,} notifications to the local APNs (HTTP/2 over TLS, one connection)")
    print(f"{'one at a time':<30} {one_at_a_time:>10,.0f} notifications/s")
    print(f"{'50 streams in flight':<30} {multiplexed:>10,.0f} notifications/s")


if __name__ == "__main__":
    asyncio.run(main())
