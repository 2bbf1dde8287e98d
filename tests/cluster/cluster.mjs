// Two starfish nodes over one bucket, one Redis, one NATS (started by run.sh),
// driven with the official TypeScript client, unmodified.
// usage: node cluster.mjs PHASE BASE_A BASE_B   (PHASE: main | redis-down | redis-back;
// state between phases in $CLUSTER_STATE). Prints one line per check and
// "cluster-PHASE: N passed, M failed".
import { readFileSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { StarfishClient, ConflictError, StarfishHttpError } from "@drakkar.software/starfish-client";
import { subscribeChanges, buildSignedEventsUrl } from "@drakkar.software/starfish-client/events";
import { deriveRootIdentity, mintDeviceCap, scopes } from "@drakkar.software/starfish-identities";
import { ed25519Suite } from "@drakkar.software/starfish-protocol";

const [PHASE, A, B] = process.argv.slice(2);
const STATE = process.env.CLUSTER_STATE;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

/** A root identity derived from a passphrase plus one paired device. */
async function device(passphrase) {
  const id = await deriveRootIdentity(passphrase);
  const signer = ed25519Suite.generateSignerKeypair();
  const cap = await mintDeviceCap(
    id.keys.edPriv,
    id.keys.edPub,
    { edPubHex: signer.pubHex, kemPubHex: randomBytes(32).toString("hex") },
    scopes.rootAll(),
  );
  const d = { uid: id.userId, cap, priv: signer.privHex };
  d.client = (base, namespace) =>
    new StarfishClient({ baseUrl: base, namespace, capProvider: { getCap: async () => ({ cap: d.cap, devEdPrivHex: d.priv }) } });
  return d;
}

/** The HTTP status a client call failed with (0 when it succeeded). */
async function statusOf(promise) {
  try {
    await promise;
    return 0;
  } catch (e) {
    if (e instanceof ConflictError) return 409;
    if (e instanceof StarfishHttpError || typeof e?.status === "number") return e.status;
    // Some client calls throw a plain Error "HTTP <status>: <body>".
    const m = /^HTTP (\d{3})\b/.exec(e?.message ?? "");
    if (m) return Number(m[1]);
    throw e;
  }
}

const state = PHASE === "main" ? { run: randomBytes(4).toString("hex") } : JSON.parse(readFileSync(STATE, "utf-8"));
const alice = await device(`cluster-alice-${state.run}`);
const bob = await device(`cluster-bob-${state.run}`);
const settings = `/users/${alice.uid}/settings`;

const main = {
  async concurrentWritersOnOneCounter() {
    // 32 writers, each adding 2 to one counter, every attempt on the other node
    // than the last: pull, add one, push with the pulled hash; on 409 pull again.
    const path = `/users/${alice.uid}/counter`;
    await alice.client(A).push(`/push${path}`, { n: 0 }, null);
    const clients = [alice.client(A), alice.client(B)];
    let accepted = 0;
    let conflicts = 0;
    const writer = async (w) => {
      let attempt = w;
      for (let done = 0; done < 2; ) {
        const c = clients[attempt++ % 2];
        const current = await c.pull(`/pull${path}`);
        const status = await statusOf(c.push(`/push${path}`, { n: current.data.n + 1 }, current.hash));
        if (status === 0) {
          accepted += 1;
          done += 1;
        } else {
          assert(status === 409, `push: HTTP ${status}`);
          conflicts += 1;
          await sleep(Math.random() * 20);
        }
      }
    };
    await Promise.all(Array.from({ length: 32 }, (_, w) => writer(w)));
    const final = await clients[1].pull(`/pull${path}`);
    assert(final.data.n === accepted, `counter ${final.data.n}, accepted pushes ${accepted}`);
    assert(accepted === 64, `accepted ${accepted}`);
    console.log(`  counter ${final.data.n} = accepted pushes ${accepted}; ${conflicts} answered 409`);
  },
  async replayToTheOtherNodeRefused() {
    const c = alice.client(A);
    await c.push(`/push${settings}`, { theme: "dark" }, null);
    const headers = { accept: "application/json", ...(await c.buildAuthHeaders("GET", `/pull${settings}`, undefined)) };
    const first = await fetch(`${A}/pull${settings}`, { headers });
    assert(first.status === 200, `first: HTTP ${first.status}`);
    const again = await fetch(`${B}/pull${settings}`, { headers });
    assert(again.status === 401, `replayed to B: HTTP ${again.status}`);
  },
  async perIdentityLimitHeldByBothNodes() {
    // Namespace `limited`: 10 requests per identity per minute, counted in Redis.
    const clients = [alice.client(A, "limited"), alice.client(B, "limited")];
    const statuses = [];
    for (let i = 0; i < 30; i++) statuses.push(await statusOf(clients[i % 2].pull(`/pull/users/${alice.uid}/notes`)));
    const ok = statuses.filter((s) => s === 0).length;
    assert(statuses.every((s) => s === 0 || s === 429), `statuses ${statuses}`);
    assert(ok === 10, `${ok} accepted of 30 (limit 10 for both nodes together)`);
    console.log(`  ${ok} of 30 accepted across both nodes, the rest 429`);
  },
  async liveChangeHeardOnTheOtherNode() {
    const subscribe = (who, base, path, changes) =>
      new Promise((resolve, reject) => {
        const c = who.client(base);
        const { url, pathAndQuery } = buildSignedEventsUrl(`${base}/events`, { paths: path.slice(1) }, base);
        const unsubscribe = subscribeChanges({
          url,
          pathAndQuery,
          authHeaders: (method, pq) => c.buildAuthHeaders(method, pq, undefined),
          parse: (data) => JSON.parse(data),
          onChange: (change) => changes.push({ change, at: Date.now() }),
          onStatus: (up) => up && resolve(unsubscribe),
        });
        setTimeout(() => reject(new Error("never connected")), 5000);
      });
    const heard = [];
    const bobHeard = [];
    const bobSettings = `/users/${bob.uid}/settings`;
    const stops = [await subscribe(alice, B, settings, heard), await subscribe(bob, B, bobSettings, bobHeard)];
    try {
      // Bob may not subscribe to Alice's document at all.
      const { url, pathAndQuery } = buildSignedEventsUrl(`${B}/events`, { paths: settings.slice(1) }, B);
      const refused = await fetch(url, { headers: await bob.client(B).buildAuthHeaders("GET", pathAndQuery, undefined) });
      assert(refused.status === 403, `bob on alice's document: HTTP ${refused.status}`);
      const c = alice.client(A);
      const current = await c.pull(`/pull${settings}`);
      const sent = Date.now();
      const pushed = await c.push(`/push${settings}`, { theme: "light" }, current.hash);
      for (let i = 0; i < 100 && heard.length === 0; i++) await sleep(10);
      assert(heard.length === 1, `heard on B: ${JSON.stringify(heard)}`);
      const [{ change, at }] = heard;
      assert(change.path === settings.slice(1) && change.hash === pushed.hash && !("data" in change), JSON.stringify(change));
      assert(at - sent < 1000, `heard after ${at - sent} ms`);
      await sleep(300);
      assert(bobHeard.length === 0, `bob heard ${JSON.stringify(bobHeard)}`);
      console.log(`  a push on A heard on B after ${at - sent} ms (push round trip included); bob heard nothing`);
      state.hash = pushed.hash;
    } finally {
      stops.forEach((stop) => stop());
    }
  },
};

const redisDown = {
  async signedWritesRefusedWith503() {
    for (const base of [A, B]) {
      const status = await statusOf(alice.client(base).push(`/push${settings}`, { theme: "lost" }, state.hash));
      assert(status === 503, `push on ${base}: HTTP ${status}`);
    }
  },
};

const redisBack = {
  async serviceResumesAndNothingWasStored() {
    const c = alice.client(B);
    let current;
    for (let i = 0; i < 100 && !current; i++) {
      const status = await statusOf(c.pull(`/pull${settings}`).then((doc) => (current = doc)));
      if (status !== 0) {
        assert(status === 503, `pull: HTTP ${status}`);
        await sleep(100);
      }
    }
    assert(current, "service did not resume within 10 s");
    assert(current.hash === state.hash && current.data.theme === "light", JSON.stringify(current));
    await alice.client(A).push(`/push${settings}`, { theme: "back" }, current.hash);
  },
};

const phases = { main, "redis-down": redisDown, "redis-back": redisBack };
let passed = 0;
let failed = 0;
for (const [name, run] of Object.entries(phases[PHASE])) {
  try {
    await run();
    console.log(`ok   ${name}`);
    passed += 1;
  } catch (e) {
    console.log(`FAIL ${name}: ${e.message}`);
    failed += 1;
  }
}
if (PHASE === "main") writeFileSync(STATE, JSON.stringify(state));
console.log(`cluster-${PHASE}: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
