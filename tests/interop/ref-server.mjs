// Starts the reference TypeScript server (@drakkar.software/starfish-server) for the
// interop harness, mounted at / and /v1 like `starfish serve --base-path / --base-path /v1`,
// with cap-cert auth, a filesystem store and optional revocation lists.
// usage: node ref-server.mjs --config FILE --port N --data DIR [--revocations FILE]
// The reference packages come from $STARFISH_REF_DIR/node_modules.
import { readFileSync, mkdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const opt = (name) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const modules = join(process.env.STARFISH_REF_DIR, "node_modules");
const load = (rel) => import(pathToFileURL(join(modules, rel)).href);

const server = await load("@drakkar.software/starfish-server/dist/index.js");
const sharing = await load("@drakkar.software/starfish-sharing/dist/index.js");
const { FilesystemObjectStore } = await load("@drakkar.software/starfish-server/dist/storage/filesystem.js");
const { serve } = await load("@hono/node-server/dist/index.mjs");
const { Hono } = await load("hono/dist/index.js");

mkdirSync(opt("data"), { recursive: true });
const revocationStore = server.createInMemoryRevocationStore();
const revocations = opt("revocations");
if (revocations && existsSync(revocations)) {
  for (const list of JSON.parse(readFileSync(revocations, "utf-8"))) {
    const result = revocationStore.acceptList(list);
    if (!result.ok) throw new Error(`revocation list refused: ${result.reason}`);
  }
}
// The config's `server.sharing` section (which starfish serve reads, and the reference
// ignores) turns on the same thing here: the sharing plugin's validators and its
// issuer-bound role enrichers.
const configText = readFileSync(opt("config"), "utf-8");
const shared = JSON.parse(configText).server?.sharing ?? {};
const plugins = [server.defaultServerPlugin];
if (shared.validators) plugins.push(sharing.sharingServerPlugin);
const enrichers = (shared.issuerBound ?? []).map((o) => sharing.makeIssuerBoundRoleEnricher(o));
const sync = server.createSyncRouter({
  store: new FilesystemObjectStore({ baseDir: opt("data") }),
  config: server.parseConfigJson(configText),
  roleResolver: server.createCapCertRoleResolver({
    nonceCache: server.createInMemoryNonceCache(),
    revocationStore,
    allowAnonymous: true,
    plugins,
  }),
  ...(enrichers.length ? { roleEnricher: server.composeEnrichers(...enrichers) } : {}),
});
const app = new Hono();
app.route("/v1", sync);
app.route("/", sync);
serve({ fetch: app.fetch, port: Number(opt("port")), hostname: "127.0.0.1" }, (info) => {
  console.log(`reference listening on 127.0.0.1:${info.port}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
