// Interop scenarios driven by the official TypeScript client
// (@drakkar.software/starfish-client with starfish-identities), unmodified.
// usage: node scenarios.mjs BASE_URL PHASE   (PHASE: main | migrated | revoked; state in $INTEROP_STATE)
// Prints one line per scenario and a closing "N passed, M failed" line.
import { readFileSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { StarfishClient, ConflictError, StarfishHttpError, buildRevocationList } from "@drakkar.software/starfish-client";
import { deriveRootIdentity, mintDeviceCap, scopes } from "@drakkar.software/starfish-identities";
import { ed25519Suite } from "@drakkar.software/starfish-protocol";
import { mintMemberCap, createPublicLink, parsePublicLink, scopes as shareScopes } from "@drakkar.software/starfish-sharing";
import { createHash } from "node:crypto";

const [BASE, PHASE] = process.argv.slice(2);
const STATE = process.env.INTEROP_STATE + ".ts";
const RUN = randomBytes(4).toString("hex");

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}
const eq = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** A root identity derived from a passphrase plus one paired device. */
async function device(passphrase, { root = false } = {}) {
  const id = await deriveRootIdentity(passphrase);
  const signer = root
    ? { privHex: id.keys.edPriv, pubHex: id.keys.edPub }
    : ed25519Suite.generateSignerKeypair();
  const kemPub = root ? id.keys.kemPub : randomBytes(32).toString("hex");
  const cap = await mintDeviceCap(id.keys.edPriv, id.keys.edPub, { edPubHex: signer.pubHex, kemPubHex: kemPub }, scopes.rootAll());
  const d = { id, uid: id.userId, cap, priv: signer.privHex, pub: signer.pubHex };
  d.client = (namespace) =>
    new StarfishClient({ baseUrl: BASE, namespace, capProvider: { getCap: async () => ({ cap: d.cap, devEdPrivHex: d.priv }) } });
  return d;
}

async function expectStatus(promise, status) {
  try {
    await promise;
  } catch (e) {
    if (e instanceof StarfishHttpError || typeof e?.status === "number") {
      assert(e.status === status, `expected HTTP ${status}, got ${e.status}: ${e.message}`);
      return;
    }
    throw e;
  }
  throw new Error(`expected HTTP ${status}, got success`);
}

/** A cap someone else issued, presented with `holder`'s device key (`link`: as a
 * public link, naming the key in X-Starfish-Pub). */
const shareClient = (cap, holder, link = false) =>
  new StarfishClient({
    baseUrl: BASE,
    capProvider: { getCap: async () => ({ cap, devEdPrivHex: holder.priv, ...(link ? { pubHex: holder.pub } : {}) }) },
  });
/** The user id of a key: a member acts as its signing key's user id. */
const userIdOf = (pubHex) => createHash("sha256").update(Buffer.from(pubHex, "hex")).digest("hex").slice(0, 32);
const memberCap = (owner, member, preset) =>
  mintMemberCap(owner.id.keys.edPriv, owner.id.keys.edPub,
    { edPubHex: member.pub, kemPubHex: "00".repeat(32), userIdHex: userIdOf(member.pub) },
    "spaces", preset("spaces"));
const link = async (owner, opts = {}) =>
  parsePublicLink((await createPublicLink({ issEdPrivHex: owner.id.keys.edPriv, issEdPubHex: owner.id.keys.edPub,
    collection: "spaces", scope: shareScopes.readOnly("spaces"), ...opts })).fragment).cap;

const alice = await device(`alice-ts-${RUN}`);
const bob = await device(`bob-ts-${RUN}`);
const anon = new StarfishClient({ baseUrl: BASE });

const scenarios = {
  async ownSettings() {
    const c = alice.client();
    const path = `/users/${alice.uid}/settings`;
    const first = await c.push(`/push${path}`, { theme: "dark" }, null);
    const got = await c.pull(`/pull${path}`);
    assert(eq(got.data, { theme: "dark" }) && got.hash === first.hash, JSON.stringify(got));
    const second = await c.push(`/push${path}`, { theme: "light" }, got.hash);
    assert((await c.pull(`/pull${path}`)).hash === second.hash, "updated hash");
  },
  async conflictAndRetry() {
    const other = await device(`alice-ts-${RUN}`);
    const path = `/users/${alice.uid}/counter`;
    const c1 = alice.client(), c2 = other.client();
    await c1.push(`/push${path}`, { n: 0 }, null);
    const base = (await c1.pull(`/pull${path}`)).hash;
    let conflicts = 0;
    const increment = async (c, baseHash) => {
      for (;;) {
        const current = await c.pull(`/pull${path}`);
        try {
          await c.push(`/push${path}`, { n: current.data.n + 1 }, baseHash ?? current.hash);
          return;
        } catch (e) {
          if (!(e instanceof ConflictError)) throw e;
          conflicts += 1;
          baseHash = null;
        }
      }
    };
    await Promise.all([increment(c1, base), increment(c2, base)]);
    const final = await c1.pull(`/pull${path}`);
    assert(final.data.n === 2, `lost update: ${JSON.stringify(final.data)}`);
    assert(conflicts >= 1, "expected a conflict");
  },
  async foreignDocumentRefused() {
    const c = bob.client();
    await expectStatus(c.pull(`/pull/users/${alice.uid}/settings`), 403);
    await expectStatus(c.push(`/push/users/${alice.uid}/settings`, { evil: true }, null), 403);
  },
  async anonymousPublicRead() {
    const root = await device(`alice-ts-${RUN}`, { root: true });
    await root.client().push("/push/feed/ts-news", { headline: "hello" }, null);
    const got = await anon.pull("/pull/feed/ts-news");
    assert(eq(got.data, { headline: "hello" }), JSON.stringify(got));
    await expectStatus(anon.pull(`/pull/users/${alice.uid}/settings`), 403);
  },
  async batchFanIn() {
    const root = await device(`alice-ts-${RUN}`, { root: true });
    await root.client().push("/push/feed/ts-sport", { headline: "goal" }, null);
    const res = await alice.client().batchPull(["feed", "settings"], {
      params: { feed: [{ topic: "ts-sport" }, { topic: "ts-news" }, { topic: "none" }] },
    });
    const feed = res.collections.feed.map((e) => e.data);
    assert(eq(feed, [{ headline: "goal" }, { headline: "hello" }, {}]), JSON.stringify(res));
    assert(eq(res.collections.settings[0].data, { theme: "light" }), JSON.stringify(res));
  },
  async bundlePull() {
    const c = alice.client();
    await c.push(`/push/p/${alice.uid}/profile`, { name: "Alice" }, null);
    await c.push(`/push/p/${alice.uid}/prefs`, { lang: "fr" }, null);
    // The client has no bundle helper: a bundle pull is a pull of the bundle path.
    const own = await c.pull(`/pull/p/${alice.uid}`);
    const cols = own.collections ?? own.data?.collections ?? own;
    assert(cols.profile && cols.prefs, `owner sees both members: ${JSON.stringify(own)}`);
    const pub = await anon.pull(`/pull/p/${alice.uid}`);
    const pubCols = pub.collections ?? pub.data?.collections ?? pub;
    assert(pubCols.profile && !pubCols.prefs, `anonymous sees the public member only: ${JSON.stringify(pub)}`);
  },
  async appendLog() {
    const c = alice.client();
    const path = `/logs/${alice.uid}/events`;
    const stamps = [];
    for (let i = 0; i < 5; i++) stamps.push((await c.append(`/push${path}`, { i })).timestamp);
    assert(eq(stamps, [...stamps].sort((a, b) => a - b)) && new Set(stamps).size === 5, `${stamps}`);
    const items = await c.pull(`/pull${path}`, { since: 0 });
    assert(eq(items.map((e) => e.data.i), [0, 1, 2, 3, 4]), JSON.stringify(items));
    assert(items.every((e) => e.authorPubkey === alice.pub), "authored by the device");
    const tail = await c.pull(`/pull${path}`, { last: 2 });
    assert(eq(tail.map((e) => e.data.i), [3, 4]), JSON.stringify(tail));
  },
  async blobRoundTrip() {
    const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, ...randomBytes(4000)]);
    const pushed = await alice.client().pushBlob(`/push/avatars/${alice.uid}`, png, "image/png");
    const got = await anon.pullBlob(`/pull/avatars/${alice.uid}`);
    assert(Buffer.from(got.data).equals(Buffer.from(png)), "same bytes");
    assert(got.contentType === "image/png" && got.hash === pushed.hash, JSON.stringify({ ct: got.contentType, h: got.hash }));
  },
  async namespaceUnderV1() {
    const c = alice.client("acme");
    const path = `/acme/${alice.uid}/notes`;
    const first = await c.push(`/push${path}`, { note: "in acme" }, null);
    const got = await c.pull(`/pull${path}`);
    assert(eq(got.data, { note: "in acme" }) && got.hash === first.hash, JSON.stringify(got));
    // Read again after `starfish migrate acme` (the "migrated" phase).
    writeFileSync(STATE + ".acme", JSON.stringify({ passphrase: `alice-ts-${RUN}`, hash: first.hash }));
  },
  async runtimeTenantUnderV1() {
    // A namespace created at runtime (an extension: the reference has none).
    if (process.env.STARFISH_INTEROP_SERVER === "reference") return;
    const name = `rt-ts-${RUN}`;
    const res = await fetch(`${BASE}/v1/_starfish/admin/namespaces`, {
      method: "POST",
      headers: { authorization: `Bearer ${process.env.STARFISH_INTEROP_ADMIN_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ name, template: "org" }),
    });
    assert(res.status === 201, `create: ${res.status} ${await res.text()}`);
    const c = alice.client(name);
    const path = `/users/${alice.uid}/notes`;
    const first = await c.push(`/push${path}`, { note: "in a runtime tenant" }, null);
    const got = await c.pull(`/pull${path}`);
    assert(eq(got.data, { note: "in a runtime tenant" }) && got.hash === first.hash, JSON.stringify(got));
    await expectStatus(bob.client(name).pull(`/pull${path}`), 403);
  },
  async readOnlyCapCannotWrite() {
    // A deliberate difference (docs/compatibility.md): the reference lets `self`
    // admit any cap of the owner, so a read-only cap can write; we answer 403.
    const signer = ed25519Suite.generateSignerKeypair();
    const cap = await mintDeviceCap(alice.id.keys.edPriv, alice.id.keys.edPub, { edPubHex: signer.pubHex, kemPubHex: "00".repeat(32) }, { ops: ["read"], collections: ["*"], paths: ["**"] });
    const ro = new StarfishClient({ baseUrl: BASE, capProvider: { getCap: async () => ({ cap, devEdPrivHex: signer.privHex }) } });
    const path = `/users/${alice.uid}/settings`;
    const current = await ro.pull(`/pull${path}`);
    const write = ro.push(`/push${path}`, { theme: "hacked" }, current.hash);
    if (process.env.STARFISH_INTEROP_SERVER === "reference") {
      await write; // the reference accepts it
      const owner = alice.client();
      await owner.push(`/push${path}`, { theme: "light" }, (await owner.pull(`/pull${path}`)).hash);
    } else {
      await expectStatus(write, 403);
    }
  },
  async liveChanges() {
    // Live changes (an extension: the reference only proxies someone else's broker),
    // read with the client's own `subscribeChanges`, unmodified.
    if (process.env.STARFISH_INTEROP_SERVER === "reference") return;
    const { subscribeChanges, buildSignedEventsUrl } = await import("@drakkar.software/starfish-client/events");
    const c = alice.client();
    const { url, pathAndQuery } = buildSignedEventsUrl(`${BASE}/events`, { paths: `users/${alice.uid}/settings` }, BASE);
    const changes = [];
    let connected;
    const ready = new Promise((resolve) => (connected = resolve));
    const unsubscribe = subscribeChanges({
      url,
      pathAndQuery,
      // The client's own request signing (what its pulls use).
      authHeaders: (method, pq) => c.buildAuthHeaders(method, pq, undefined),
      parse: (data) => JSON.parse(data),
      onChange: (change) => changes.push(change),
      onStatus: (up) => up && connected(),
    });
    try {
      await Promise.race([ready, new Promise((_, no) => setTimeout(() => no(new Error("never connected")), 5000))]);
      const settings = `/users/${alice.uid}/settings`;
      const current = await c.pull(`/pull${settings}`);
      const pushed = await c.push(`/push${settings}`, { live: RUN }, current.hash ?? null);
      for (let i = 0; i < 50 && changes.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
      assert(changes.length === 1, `changes: ${JSON.stringify(changes)}`);
      const [change] = changes;
      assert(change.collection === "settings" && change.path === settings.slice(1), JSON.stringify(change));
      assert(change.hash === pushed.hash && !("data" in change), JSON.stringify(change));
    } finally {
      unsubscribe();
    }
  },
  async memberShareReadsAndWrites() {
    const path = `/spaces/${alice.uid}/ts-shared`;
    await alice.client().push(`/push${path}`, { title: "shared" }, null);
    const c = shareClient(await memberCap(alice, bob, shareScopes.writer), bob);
    const got = await c.pull(`/pull${path}`);
    assert(eq(got.data, { title: "shared" }), JSON.stringify(got));
    await c.push(`/push${path}`, { title: "edited by bob" }, got.hash);
    assert(eq((await alice.client().pull(`/pull${path}`)).data, { title: "edited by bob" }), "alice sees bob's edit");
  },
  async readOnlyShareCannotWrite() {
    const path = `/spaces/${alice.uid}/ts-read-only`;
    await alice.client().push(`/push${path}`, { title: "ro" }, null);
    const c = shareClient(await memberCap(alice, bob, shareScopes.readOnly), bob);
    const got = await c.pull(`/pull${path}`);
    await expectStatus(c.push(`/push${path}`, { title: "no" }, got.hash), 403);
  },
  async shareDoesNotReachOtherOwners() {
    const path = `/spaces/${alice.uid}/ts-not-bobs`;
    await alice.client().push(`/push${path}`, { title: "alice's" }, null);
    const carol = await device(`carol-ts-${RUN}`);
    await expectStatus(shareClient(await memberCap(bob, carol, shareScopes.writer), carol).pull(`/pull${path}`), 403);
    const share = shareClient(await memberCap(alice, bob, shareScopes.writer), bob);
    await expectStatus(share.pull(`/pull/users/${alice.uid}/settings`), 403);
  },
  async publicLinkRedeemedByAStranger() {
    const path = `/spaces/${alice.uid}/ts-public`;
    await alice.client().push(`/push${path}`, { title: "public" }, null);
    const stranger = await device(`stranger-ts-${RUN}`);
    assert(eq((await shareClient(await link(alice), stranger, true).pull(`/pull${path}`)).data, { title: "public" }), "open link");
    const lasting = await link(alice, { expiresAt: Math.floor(Date.now() / 1000) + 10 * 365 * 86400 });
    assert(eq((await shareClient(lasting, stranger, true).pull(`/pull${path}`)).data, { title: "public" }), "ten-year link");
  },
  async publicLinkOutsideItsAudience() {
    const path = `/spaces/${alice.uid}/ts-for-dave`;
    await alice.client().push(`/push${path}`, { title: "dave" }, null);
    const dave = await device(`dave-ts-${RUN}`), carol = await device(`carol2-ts-${RUN}`);
    const cap = await link(alice, { allowedIdentities: [dave.pub] });
    await expectStatus(shareClient(cap, carol, true).pull(`/pull${path}`), 403);
    assert(eq((await shareClient(cap, dave, true).pull(`/pull${path}`)).data, { title: "dave" }), "dave reads");
  },
  async prepareRevocation() {
    await bob.client().push(`/push/users/${bob.uid}/settings`, { ok: true }, null);
    const list = buildRevocationList({
      issEdPubHex: bob.id.keys.edPub,
      issEdPrivHex: bob.id.keys.edPriv,
      generation: 1,
      revoked: [{ sub: bob.cap.sub, nonce: bob.cap.nonce, exp: bob.cap.exp }],
    });
    writeFileSync(STATE, JSON.stringify({ passphrase: `bob-ts-${RUN}`, cap: bob.cap, priv: bob.priv, revocations: [list] }));
  },
};

const revokedScenarios = {
  async revokedDeviceRefused() {
    const state = JSON.parse(readFileSync(STATE, "utf-8"));
    const revoked = await device(state.passphrase);
    revoked.cap = state.cap;
    revoked.priv = state.priv;
    await expectStatus(revoked.client().pull(`/pull/users/${revoked.uid}/settings`), 401);
    const fresh = await device(state.passphrase);
    const got = await fresh.client().pull(`/pull/users/${fresh.uid}/settings`);
    assert(eq(got.data, { ok: true }), JSON.stringify(got));
  },
};

const migratedScenarios = {
  async namespaceAfterMigration() {
    // `starfish migrate` moved acme to its own prefix while the server ran: the same
    // document, the same hash, and writes go on.
    const state = JSON.parse(readFileSync(STATE + ".acme", "utf-8"));
    const owner = await device(state.passphrase);
    const c = owner.client("acme");
    const path = `/acme/${owner.uid}/notes`;
    const got = await c.pull(`/pull${path}`);
    assert(eq(got.data, { note: "in acme" }) && got.hash === state.hash, JSON.stringify(got));
    const second = await c.push(`/push${path}`, { note: "after the move" }, got.hash);
    const again = await c.pull(`/pull${path}`);
    assert(eq(again.data, { note: "after the move" }) && again.hash === second.hash, JSON.stringify(again));
  },
};

const phases = { main: scenarios, revoked: revokedScenarios, migrated: migratedScenarios };
let passed = 0, failed = 0;
for (const [name, run] of Object.entries(phases[PHASE])) {
  try {
    await run();
    passed += 1;
    console.log(`ts: ok   ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`ts: FAIL ${name}\n${e?.stack ?? e}`);
  }
}
console.log(`ts-${PHASE}: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
