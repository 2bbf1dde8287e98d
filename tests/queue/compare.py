"""Sends the same writes to the reference Python server (with its queuing plugin)
and to starfish, records what each publishes on NATS, and compares: the same
subjects, and the same payloads but for the write's timestamp.

usage: compare.py NATS_URL REFERENCE_URL STARFISH_URL
Prints "queue: N passed, M failed".
"""

import asyncio
import json
import sys

import httpx
import nats

NATS, REFERENCE, STARFISH = sys.argv[1:4]

# (path, body): documents, a per-resource subject, an id outside the subject charset,
# a collection without a queue, a queue-only collection, a log append.
WRITES = [
    ("/push/posts/p1", {"data": {"title": "hello", "tags": ["a", "b"]}, "baseHash": None}),
    ("/push/posts/p-2_x", {"data": {"title": "second"}, "baseHash": None}),
    ("/push/posts/has.dot", {"data": {"title": "dotted"}, "baseHash": None}),
    ("/push/notes/lobby/monday", {"data": {"n": 1}, "baseHash": None}),
    ("/push/quiet/q1", {"data": {"n": 1}, "baseHash": None}),
    ("/push/orders/shop-1", {"data": {"sku": 7, "qty": 2}}),
    ("/push/orders/shop-1", {"data": {"sku": 8, "qty": 1}}),
    ("/push/log/l1", {"data": {"event": "start"}}),
]


async def record(base):
    nc = await nats.connect(NATS)
    got = []

    async def on(msg):
        got.append((msg.subject, json.loads(msg.data)))

    await nc.subscribe(">", cb=on)
    await nc.flush()
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        for path, body in WRITES:
            r = await http.post(path, json=body)
            assert r.status_code == 200, f"{base}{path}: {r.status_code} {r.text}"
    for _ in range(50):
        if len(got) >= 7:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    await nc.close()
    return got


def without_timestamp(messages):
    out = []
    for subject, payload in messages:
        assert isinstance(payload.get("timestamp"), int), payload
        out.append((subject, {k: v for k, v in payload.items() if k != "timestamp"}))
    return out


async def main():
    reference = await record(REFERENCE)
    ours = await record(STARFISH)
    passed = failed = 0

    def check(label, ok, detail=""):
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"queue: ok   {label}")
        else:
            failed += 1
            print(f"queue: FAIL {label}\n{detail}")

    check("the reference published one message per queued write", len(reference) == 7,
          json.dumps(reference, indent=1))
    check("starfish published the same number", len(ours) == len(reference),
          json.dumps(ours, indent=1))
    ref, mine = without_timestamp(reference), without_timestamp(ours)
    check("the same subjects, in order", [s for s, _ in ref] == [s for s, _ in mine],
          f"reference: {[s for s, _ in ref]}\nstarfish:  {[s for s, _ in mine]}")
    for (s1, p1), (s2, p2) in zip(ref, mine):
        check(f"the same payload on {s1}", p1 == p2, f"reference: {p1}\nstarfish:  {p2}")
    print(f"queue: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


asyncio.run(main())
