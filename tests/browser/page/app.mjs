// The page: the official TypeScript client, unmodified, bundled by esbuild, talking
// to a Starfish server on another origin (?server=BASE_URL). It creates a passphrase
// identity and a paired device, pushes and pulls a JSON document, uploads and
// downloads a blob, and leaves its verdict in window.__starfishResult:
//   { ok, steps: [...], error?, errorName?, origin }
import { StarfishClient, StarfishHttpError } from "@drakkar.software/starfish-client";
import { deriveRootIdentity, mintDeviceCap, scopes } from "@drakkar.software/starfish-identities";
import { ed25519Suite } from "@drakkar.software/starfish-protocol";

const BASE = new URLSearchParams(location.search).get("server");
const logEl = document.getElementById("log");
const steps = [];
function step(msg) {
  steps.push(msg);
  logEl.textContent += msg + "\n";
  console.log(`page: ${msg}`);
}
function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}
const eq = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const random = (n) => crypto.getRandomValues(new Uint8Array(n));

async function run() {
  assert(BASE, "no ?server= given");
  step(`page origin ${location.origin}, server ${BASE}`);

  // A root identity from a passphrase, and a device cap for a fresh signer key.
  const id = await deriveRootIdentity(`browser-${hex(random(8))}`);
  const signer = ed25519Suite.generateSignerKeypair();
  const cap = await mintDeviceCap(
    id.keys.edPriv,
    id.keys.edPub,
    { edPubHex: signer.pubHex, kemPubHex: hex(random(32)) },
    scopes.rootAll(),
  );
  const client = new StarfishClient({
    baseUrl: BASE,
    capProvider: { getCap: async () => ({ cap, devEdPrivHex: signer.privHex }) },
  });
  step(`identity ${id.userId}`);

  // A JSON document of the `self` collection: signed push, signed pull, update.
  const path = `/users/${id.userId}/settings`;
  const doc = { theme: "dark", from: location.origin, notes: Array.from({ length: 30 }, (_, i) => `note ${i}`) };
  const first = await client.push(`/push${path}`, doc, null);
  const got = await client.pull(`/pull${path}`);
  assert(eq(got.data, doc), `pulled ${JSON.stringify(got.data)}`);
  assert(got.hash === first.hash, `hash ${got.hash} != ${first.hash}`);
  step(`json push+pull ok (hash ${first.hash.slice(0, 12)}…)`);
  const second = await client.push(`/push${path}`, { ...doc, theme: "light" }, got.hash);
  const again = await client.pull(`/pull${path}`);
  assert(again.hash === second.hash && again.data.theme === "light", JSON.stringify(again));
  step("json update with baseHash ok");

  // A blob of the binary collection: upload, then download with its ETag as hash.
  const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, ...random(6000)]);
  const pushed = await client.pushBlob(`/push/avatars/${id.userId}`, png, "image/png");
  const blob = await client.pullBlob(`/pull/avatars/${id.userId}`);
  assert(eq(Array.from(new Uint8Array(blob.data)), Array.from(png)), "same bytes back");
  assert(blob.contentType === "image/png", `content type ${blob.contentType}`);
  assert(blob.hash === pushed.hash, `ETag hash ${blob.hash} (is ETag exposed?) != pushed ${pushed.hash}`);
  step(`blob push+pull ok (${png.length} bytes, hash ${pushed.hash.slice(0, 12)}…)`);
}

window.__starfishResult = run().then(
  () => ({ ok: true, steps, origin: location.origin }),
  (e) => {
    const error = e instanceof StarfishHttpError ? `HTTP ${e.status}: ${e.message}` : String(e?.stack ?? e);
    step(`FAILED: ${error}`);
    return { ok: false, steps, origin: location.origin, error, errorName: e?.name ?? null };
  },
);
