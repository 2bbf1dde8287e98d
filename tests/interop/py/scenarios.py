"""Interop scenarios driven by the official Python client stack (starfish-sdk,
starfish-identities, starfish-protocol), unmodified.

usage: scenarios.py BASE_URL PHASE  (PHASE: main | migrated | revoked, STATE file in $INTEROP_STATE)
Prints one line per scenario and a closing "N passed, M failed" line.
"""

import asyncio
import hashlib
import json
import os
import secrets
import sys
import traceback

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from starfish_identities.cap_mint import mint_device_cap, scopes
from starfish_identities.identity import derive_root_identity
from starfish_protocol.revocation import build_revocation_list
from starfish_sdk import StarfishClient
from starfish_sharing.cap_mint import mint_member_cap, scopes as share_scopes
from starfish_sharing.public_link import create_public_link, parse_public_link
from starfish_sdk.types import ConflictError, StarfishHttpError

BASE = sys.argv[1]
PHASE = sys.argv[2]
STATE = os.environ["INTEROP_STATE"]


class Device:
    """A root identity (from a passphrase, as an app would) and one paired device."""

    def __init__(self, passphrase: str):
        self.root = derive_root_identity(passphrase)
        ed = Ed25519PrivateKey.generate()
        kem = X25519PrivateKey.generate()
        self.dev_priv = ed.private_bytes_raw().hex()
        self.dev_pub = ed.public_key().public_bytes_raw().hex()
        kem_pub = kem.public_key().public_bytes_raw().hex()
        self.cap = mint_device_cap(
            self.root.keys.ed_priv,
            self.root.keys.ed_pub,
            {"edPubHex": self.dev_pub, "kemPubHex": kem_pub},
            scopes.root_all(),
        )
        self.uid = self.root.user_id

    async def get_cap(self):
        return {"cap": self.cap, "dev_ed_priv_hex": self.dev_priv}

    def client(self, namespace=None):
        return StarfishClient(BASE, cap_provider=self, namespace=namespace)


class RootDevice(Device):
    """The root key acting as its own (root) device."""

    def __init__(self, passphrase: str):
        super().__init__(passphrase)
        self.dev_priv = self.root.keys.ed_priv
        self.cap = mint_device_cap(
            self.root.keys.ed_priv,
            self.root.keys.ed_pub,
            {"edPubHex": self.root.keys.ed_pub, "kemPubHex": self.root.keys.kem_pub},
            scopes.root_all(),
        )


def extra_device(owner: Device, scope) -> Device:
    """Another device of `owner`'s identity, with its own key and a cap for `scope`."""
    dev = Device.__new__(Device)
    dev.__dict__.update(owner.__dict__)
    ed = Ed25519PrivateKey.generate()
    dev.dev_priv = ed.private_bytes_raw().hex()
    dev.cap = mint_device_cap(
        owner.root.keys.ed_priv,
        owner.root.keys.ed_pub,
        {"edPubHex": ed.public_key().public_bytes_raw().hex(), "kemPubHex": "00" * 32},
        scope,
    )
    return dev


RUN = secrets.token_hex(4)
alice = Device(f"alice-{RUN}")
bob = Device(f"bob-{RUN}")


async def expect_status(coro, status):
    try:
        await coro
    except StarfishHttpError as e:
        assert e.status == status, f"expected HTTP {status}, got {e.status}: {e.body}"
        return
    raise AssertionError(f"expected HTTP {status}, got success")


async def own_settings():
    async with alice.client() as c:
        path = f"/users/{alice.uid}/settings"
        first = await c.push(f"/push{path}", {"theme": "dark", "size": 3}, None)
        got = await c.pull(f"/pull{path}")
        assert got.data == {"theme": "dark", "size": 3}, got.data
        assert got.hash == first.hash
        second = await c.push(f"/push{path}", {"theme": "light"}, got.hash)
        assert (await c.pull(f"/pull{path}")).hash == second.hash


async def conflict_and_retry():
    # Two devices of one identity write the same document concurrently.
    other = extra_device(alice, scopes.root_all())
    path = f"/users/{alice.uid}/counter"
    async with alice.client() as c1, other.client() as c2:
        await c1.push(f"/push{path}", {"n": 0}, None)
        base = (await c1.pull(f"/pull{path}")).hash

        async def increment(c, base_hash):
            conflicts = 0
            while True:
                try:
                    current = await c.pull(f"/pull{path}")
                    if base_hash is None:
                        base_hash = current.hash
                    await c.push(f"/push{path}", {"n": current.data["n"] + 1}, base_hash)
                    return conflicts
                except ConflictError:
                    conflicts += 1
                    base_hash = None

        # Both start from the same base: one must conflict and retry.
        results = await asyncio.gather(increment(c1, base), increment(c2, base))
        final = await c1.pull(f"/pull{path}")
        assert final.data["n"] == 2, f"lost update: {final.data}"
        assert sum(results) >= 1, "expected at least one conflict"


async def foreign_document_refused():
    async with bob.client() as c:
        await expect_status(c.pull(f"/pull/users/{alice.uid}/settings"), 403)
        await expect_status(c.push(f"/push/users/{alice.uid}/settings", {"evil": True}, None), 403)


async def anonymous_public_read():
    root = RootDevice(f"alice-{RUN}")
    async with root.client() as c:
        await c.push("/push/feed/news", {"headline": "hello"}, None)
    async with StarfishClient(BASE) as anon:
        got = await anon.pull("/pull/feed/news")
        assert got.data == {"headline": "hello"}, got.data
        await expect_status(anon.pull(f"/pull/users/{alice.uid}/settings"), 403)


async def batch_fan_in():
    async with alice.client() as c:
        root = RootDevice(f"alice-{RUN}")
        async with root.client() as rc:
            await rc.push("/push/feed/sport", {"headline": "goal"}, None)
        res = await c.batch_pull(
            ["feed", "settings"],
            params={"feed": [{"topic": "sport"}, {"topic": "news"}, {"topic": "none"}]},
        )
        feed = res["collections"]["feed"]
        assert [e.get("data") for e in feed] == [{"headline": "goal"}, {"headline": "hello"}, {}], feed
        assert res["collections"]["settings"][0]["data"] == {"theme": "light"}


async def bundle_pull():
    async with alice.client() as c:
        await c.push(f"/push/p/{alice.uid}/profile", {"name": "Alice"}, None)
        await c.push(f"/push/p/{alice.uid}/prefs", {"lang": "fr"}, None)
        own = await c._client.get(f"{BASE}/pull/p/{alice.uid}", headers=await c._auth_headers("GET", f"/pull/p/{alice.uid}", None))
        assert own.status_code == 200, own.text
        cols = own.json()["collections"]
        assert cols["profile"]["data"] == {"name": "Alice"} and cols["prefs"]["data"] == {"lang": "fr"}, cols
    async with StarfishClient(BASE) as anon:
        res = await anon._client.get(f"{BASE}/pull/p/{alice.uid}")
        assert set(res.json()["collections"]) == {"profile"}, res.text


async def append_log():
    async with alice.client() as c:
        path = f"/logs/{alice.uid}/events"
        stamps = [(await c.append(f"/push{path}", {"i": i})).timestamp for i in range(5)]
        assert stamps == sorted(stamps) and len(set(stamps)) == 5, stamps
        items = await c.pull(f"/pull{path}", since=0)
        assert [e["data"]["i"] for e in items] == [0, 1, 2, 3, 4], items
        assert all(e["authorPubkey"] == alice.dev_pub for e in items)
        tail = await c.pull(f"/pull{path}", last=2)
        assert [e["data"]["i"] for e in tail] == [3, 4], tail


async def blob_round_trip():
    png = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(4000)
    async with alice.client() as c:
        pushed = await c.push_blob(f"/push/avatars/{alice.uid}", png, "image/png")
    async with StarfishClient(BASE) as anon:
        got = await anon.pull_blob(f"/pull/avatars/{alice.uid}")
        assert got.data == png and got.content_type == "image/png" and got.hash == pushed.hash


async def namespace_under_v1():
    async with alice.client(namespace="acme") as c:
        path = f"/acme/{alice.uid}/notes"
        first = await c.push(f"/push{path}", {"note": "in acme"}, None)
        got = await c.pull(f"/pull{path}")
        assert got.data == {"note": "in acme"} and got.hash == first.hash
    # Read again after `starfish migrate acme` (the "migrated" phase).
    with open(STATE + ".acme", "w") as f:
        json.dump({"passphrase": f"alice-{RUN}", "hash": first.hash}, f)


async def namespace_after_migration():
    # `starfish migrate` moved acme to its own prefix while the server ran: the same
    # document, the same hash, and writes go on.
    state = json.load(open(STATE + ".acme"))
    owner = Device(state["passphrase"])
    async with owner.client(namespace="acme") as c:
        path = f"/acme/{owner.uid}/notes"
        got = await c.pull(f"/pull{path}")
        assert got.data == {"note": "in acme"} and got.hash == state["hash"], got
        second = await c.push(f"/push{path}", {"note": "after the move"}, got.hash)
        again = await c.pull(f"/pull{path}")
        assert again.data == {"note": "after the move"} and again.hash == second.hash


def create_tenant(name):
    """Creates namespace `name` from the `org` template through the admin API under /v1."""
    import urllib.request

    body = json.dumps({"name": name, "template": "org"}).encode()
    req = urllib.request.Request(
        f"{BASE}/v1/_starfish/admin/namespaces", data=body, method="POST",
        headers={"Authorization": f"Bearer {os.environ['STARFISH_INTEROP_ADMIN_KEY']}",
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as res:
        assert res.status == 201, res.status


async def runtime_tenant_under_v1():
    # A namespace created at runtime (an extension: the reference has none).
    if os.environ.get("STARFISH_INTEROP_SERVER") == "reference":
        return
    name = f"rt-py-{RUN}"
    await asyncio.to_thread(create_tenant, name)
    async with alice.client(namespace=name) as c:
        path = f"/users/{alice.uid}/notes"
        first = await c.push(f"/push{path}", {"note": "in a runtime tenant"}, None)
        got = await c.pull(f"/pull{path}")
        assert got.data == {"note": "in a runtime tenant"} and got.hash == first.hash
    async with bob.client(namespace=name) as c:
        await expect_status(c.pull(f"/pull{path}"), 403)


async def read_only_cap_cannot_write():
    # A deliberate difference (docs/compatibility.md): the reference lets `self`
    # admit any cap of the owner, so a read-only cap can write; we answer 403.
    ro = extra_device(alice, {"ops": ["read"], "collections": ["*"], "paths": ["**"]})
    path = f"/users/{alice.uid}/settings"
    async with ro.client() as c:
        current = await c.pull(f"/pull{path}")
        write = c.push(f"/push{path}", {"theme": "hacked"}, current.hash)
        if os.environ.get("STARFISH_INTEROP_SERVER") == "reference":
            await write  # the reference accepts it
            async with alice.client() as owner:
                await owner.push(f"/push{path}", {"theme": "light"}, (await owner.pull(f"/pull{path}")).hash)
        else:
            await expect_status(write, 403)


class Share:
    """A cap someone else issued (a member cap, or a public link redeemed with
    `pub_hex`), presented by `holder`'s device key."""

    def __init__(self, cap, holder: Device, link=False):
        self.cap, self.holder, self.link = cap, holder, link

    async def get_cap(self):
        ctx = {"cap": self.cap, "dev_ed_priv_hex": self.holder.dev_priv}
        if self.link:
            ctx["pub_hex"] = self.holder.dev_pub
        return ctx

    def client(self, namespace=None):
        return StarfishClient(BASE, cap_provider=self, namespace=namespace)


def member_cap(owner: Device, member: Device, preset):
    # The member acts as the user id of the key that signs (its device key).
    uid = hashlib.sha256(bytes.fromhex(member.dev_pub)).hexdigest()[:32]
    sub = {"edPubHex": member.dev_pub, "kemPubHex": "00" * 32, "userIdHex": uid}
    return mint_member_cap(owner.root.keys.ed_priv, owner.root.keys.ed_pub, sub, "spaces",
                           preset("spaces"))


async def alice_space(name):
    """Alice writes her space `name` with her own device; its path."""
    path = f"/spaces/{alice.uid}/{name}"
    async with alice.client() as c:
        await c.push(f"/push{path}", {"title": name}, None)
    return path


async def member_share_reads_and_writes():
    path = await alice_space("shared")
    share = Share(member_cap(alice, bob, share_scopes.writer), bob)
    async with share.client() as c:
        got = await c.pull(f"/pull{path}")
        assert got.data == {"title": "shared"}, got.data
        await c.push(f"/push{path}", {"title": "edited by bob"}, got.hash)
    async with alice.client() as c:
        assert (await c.pull(f"/pull{path}")).data == {"title": "edited by bob"}


async def read_only_share_cannot_write():
    path = await alice_space("read-only")
    share = Share(member_cap(alice, bob, share_scopes.read_only), bob)
    async with share.client() as c:
        got = await c.pull(f"/pull{path}")
        await expect_status(c.push(f"/push{path}", {"title": "no"}, got.hash), 403)


async def share_does_not_reach_other_owners():
    # Bob shares Alice's space with himself... as issuer Bob: it reaches nothing of Alice's.
    path = await alice_space("not-bobs")
    carol = Device(f"carol-{RUN}")
    forged = Share(member_cap(bob, carol, share_scopes.writer), carol)
    async with forged.client() as c:
        await expect_status(c.pull(f"/pull{path}"), 403)
    # Nor does Alice's share reach her own settings.
    share = Share(member_cap(alice, bob, share_scopes.writer), bob)
    async with share.client() as c:
        await expect_status(c.pull(f"/pull/users/{alice.uid}/settings"), 403)


async def public_link_redeemed_by_a_stranger():
    path = await alice_space("public")
    link = create_public_link(alice.root.keys.ed_priv, alice.root.keys.ed_pub, "spaces",
                              share_scopes.read_only("spaces"))
    parsed = parse_public_link(link.fragment)
    stranger = Device(f"stranger-{RUN}")
    async with Share(parsed.cap, stranger, link=True).client() as c:
        assert (await c.pull(f"/pull{path}")).data == {"title": "public"}
    # A long-lived link (ten years) works the same.
    import time
    lasting = create_public_link(alice.root.keys.ed_priv, alice.root.keys.ed_pub, "spaces",
                                 share_scopes.read_only("spaces"),
                                 expires_at=int(time.time()) + 10 * 365 * 86400)
    async with Share(parse_public_link(lasting.fragment).cap, stranger, link=True).client() as c:
        assert (await c.pull(f"/pull{path}")).data == {"title": "public"}


async def public_link_outside_its_audience():
    path = await alice_space("for-dave")
    dave, carol = Device(f"dave-{RUN}"), Device(f"carol2-{RUN}")
    link = create_public_link(alice.root.keys.ed_priv, alice.root.keys.ed_pub, "spaces",
                              share_scopes.read_only("spaces"), allowed_identities=[dave.dev_pub])
    cap = parse_public_link(link.fragment).cap
    async with Share(cap, carol, link=True).client() as c:
        await expect_status(c.pull(f"/pull{path}"), 403)
    async with Share(cap, dave, link=True).client() as c:
        assert (await c.pull(f"/pull{path}")).data == {"title": "for-dave"}


async def prepare_revocation():
    # Revoke Bob's device: the list is signed by Bob's root and handed to the server.
    async with bob.client() as c:
        await c.push(f"/push/users/{bob.uid}/settings", {"ok": True}, None)
    lst = build_revocation_list(
        bob.root.keys.ed_pub,
        bob.root.keys.ed_priv,
        1,
        [{"sub": bob.cap["sub"], "nonce": bob.cap["nonce"], "exp": bob.cap["exp"]}],
    )
    # And Alice revokes a share she gave Bob (her list, signed by her root).
    path = await alice_space("revoked-share")
    share = member_cap(alice, bob, share_scopes.read_only)
    async with Share(share, bob).client() as c:
        await c.pull(f"/pull{path}")
    alice_list = build_revocation_list(
        alice.root.keys.ed_pub,
        alice.root.keys.ed_priv,
        1,
        [{"sub": share["sub"], "nonce": share["nonce"], "exp": share["exp"]}],
    )
    with open(STATE, "w") as f:
        json.dump({"bob": {"passphrase": f"bob-{RUN}", "cap": bob.cap, "dev_priv": bob.dev_priv},
                   "share": {"cap": share, "path": path},
                   "revocations": [lst, alice_list]}, f)


async def revoked_device_refused():
    state = json.load(open(STATE))
    dev = Device(state["bob"]["passphrase"])
    dev.cap, dev.dev_priv = state["bob"]["cap"], state["bob"]["dev_priv"]
    async with dev.client() as c:
        await expect_status(c.pull(f"/pull/users/{dev.uid}/settings"), 401)
    fresh = Device(state["bob"]["passphrase"])  # a new device of the same identity
    async with fresh.client() as c:
        assert (await c.pull(f"/pull/users/{fresh.uid}/settings")).data == {"ok": True}


async def revoked_share_refused():
    state = json.load(open(STATE))
    holder = Device(state["bob"]["passphrase"])
    holder.dev_priv = state["bob"]["dev_priv"]
    async with Share(state["share"]["cap"], holder).client() as c:
        await expect_status(c.pull(f"/pull{state['share']['path']}"), 401)


PHASES = {
    "main": [own_settings, conflict_and_retry, foreign_document_refused, anonymous_public_read,
             batch_fan_in, bundle_pull, append_log, blob_round_trip, namespace_under_v1,
             runtime_tenant_under_v1,
             read_only_cap_cannot_write, member_share_reads_and_writes,
             read_only_share_cannot_write, share_does_not_reach_other_owners,
             public_link_redeemed_by_a_stranger, public_link_outside_its_audience,
             prepare_revocation],
    "revoked": [revoked_device_refused, revoked_share_refused],
    "migrated": [namespace_after_migration],
}


async def main():
    passed = failed = 0
    for scenario in PHASES[PHASE]:
        try:
            await scenario()
            passed += 1
            print(f"py: ok   {scenario.__name__}")
        except Exception:
            failed += 1
            print(f"py: FAIL {scenario.__name__}\n{traceback.format_exc()}")
    print(f"py-{PHASE}: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


asyncio.run(main())
