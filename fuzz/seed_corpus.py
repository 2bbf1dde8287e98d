#!/usr/bin/env python3
"""Writes seed inputs for every fuzz target from tests/vectors and the test suites'
configs into OUT/<target>/ (default: fuzz/seeds). The committed corpus
(fuzz/corpus/<target>) is these seeds and what the fuzzer found, minimised with
`cargo fuzz cmin` (docs/fuzzing.md)."""

import hashlib
import json
import pathlib
import re
import sys
from urllib.parse import urlsplit

ROOT = pathlib.Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
OUT = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "fuzz" / "seeds"


def vec(name):
    return json.loads((VECTORS / name).read_text())


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def test_configs():
    """Every JSON config literal (`r#"{ "version": 1 ... }"#`) in the Rust tests."""
    for path in list(ROOT.glob("crates/*/tests/*.rs")) + list(ROOT.glob("crates/*/tests/*/*.rs")):
        for m in re.finditer(r'r#"(\{\s*"version".*?)"#', path.read_text(), re.S):
            yield m.group(1)


def yaml_configs():
    for path in list(ROOT.glob("examples/**/*.yaml")):
        yield path.read_text()
    for path in ROOT.glob("crates/**/*.rs"):
        for m in re.finditer(r'r#"(\s*version: 1\n.*?)"#', path.read_text(), re.S):
            yield m.group(1)


# config_loader: first byte even = JSON, odd = YAML.
for case in vec("config-validation.json")["cases"]:
    write("config_loader", b"\x00" + json.dumps(case["input"]).encode())
write("config_loader", b"\x00" + json.dumps(vec("http-scenarios.json")["config"]).encode())
for text in test_configs():
    write("config_loader", b"\x00" + text.encode())
for text in yaml_configs():
    write("config_loader", b"\x01" + text.encode())

# template: the template, then parameter values, then an optional `+member`.
templates = set()
for text in test_configs():
    templates.update(re.findall(r'"storagePath":\s*"([^"]*)"', text))
for case in vec("config-validation.json")["cases"]:
    templates.update(re.findall(r'"storagePath":\s*"([^"]*)"', json.dumps(case["input"])))
values = ["abc", "10ba682c8ad13513971e8b56881aab8b", "2026-01-01", "..", ".", "a..b", "_keyring",
          "x.__meta__", "x__seg", "a:b@c", "x" * 201]
for t in sorted(templates):
    n = t.count("{")
    write("template", "\n".join([t] + values[:n]))
    write("template", "\n".join([t] + values[-n:] + ["+profile"]) if n else t + "\n+profile")

# canonical_json: the hash vectors' inputs.
for v in vec("document-hash.json")["vectors"]:
    write("canonical_json", json.dumps(v["input"]))
write("canonical_json", '{"f":0.1,"g":1e-7,"h":1e21,"i":1.5,"j":-0,"k":2.0,"l":9007199254740993}')
write("canonical_json", '["\\u0001\\b\\f\\n\\r\\t\\"\\\\/", "\\ud83d\\ude00", {"\\uffff": 1, "\\ud800\\udc00": 2}]')

# capcert_auth: even mode = raw headers, odd = a certificate the harness signs.
certs = vec("cap-certs.json")["cases"]
sigs = vec("request-signing.json")["cases"]
for c in certs:
    for s in sigs:
        h = s["headers"]
        i = s["input"]
        fields = [c["authorizationHeader"], h["X-Starfish-Sig"], h["X-Starfish-Ts"],
                  h["X-Starfish-Nonce"], i["method"], i["pathAndQuery"], i["host"], i["body"] or ""]
        write("capcert_auth", b"\x00" + "\n".join(fields).encode())
    cert = dict(c["cert"])
    cert.pop("sig", None)
    for mode in (b"\x01", b"\x03"):
        write("capcert_auth", mode + json.dumps(cert).encode() + b"\n/pull/users/x/notes\n")
        write("capcert_auth", mode + json.dumps(cert).encode() + b"\n/push/a\n{\"data\":{}}")

# push_envelope and http_request: the scenarios' requests.
for s in vec("http-scenarios.json")["scenarios"]:
    r = s["request"]
    body = r["body"]
    if isinstance(body, dict):  # {"base64": ...}
        import base64
        body = base64.b64decode(body["base64"])
    elif body is None:
        body = b""
    else:
        body = body.encode()
    if r["method"] == "POST" and body:
        write("push_envelope", body)
    url = urlsplit(r["url"])
    path = url.path + ("?" + url.query if url.query else "")
    head = [f"{r['method']} {path}", f"host: {url.netloc}"]
    head += [f"{k}: {v}" for k, v in r["headers"].items()]
    write("http_request", "\n".join(head).encode() + b"\n\n" + body)
for body in [b'{"data":{"a":{"__proto__":{"x":1}},"arr":[{"prototype":1}]},"baseHash":null}',
             b'{"data":{"v":1},"ts":1e300}', b'{"data":{"n":2.0,"m":-0,"big":9007199254740993}}']:
    write("push_envelope", body)
for req in [b"POST /push/log/x\ncontent-type: application/json\n\n{\"data\":{\"i\":1}}\xffGET /pull/log/x?checkpoint=0",
            b"POST /push/flat/x\ncontent-type: application/json\n\n{\"data\":{\"i\":1},\"ts\":5}\xffGET /pull/flat/x?last=2",
            b"POST /push/pics/x\ncontent-type: image/png\n\n\x89PNG\xffGET /pull/pics/x",
            b"POST /push/b/x/a\ncontent-type: application/json\n\n{\"data\":{}}\xffGET /pull/b/x",
            b"GET /batch/pull?collections=log,docs,a&params=%7B%22log%22%3A%5B%7B%22id%22%3A%22x%22%7D%5D%7D&appendParams=%7B%22log%22%3A%5B%7B%22since%22%3A0%7D%5D%7D",
            b"GET /list/docs?limit=2&after=a", b"OPTIONS /pull/docs/x\norigin: https://app.example\naccess-control-request-method: POST",
            b"GET /openapi.json", b"GET /config", b"GET /acme/pull/acme/x"]:
    write("http_request", req)

# scope_glob: the target, then scope entries.
sp = vec("scope-paths.json")
for c in sp["pathGlobMatch"]:
    write("scope_glob", c["target"] + "\n" + c["glob"])
for c in sp["matchScopePath"]:
    scope = c.get("scopePaths") or []
    write("scope_glob", "\n".join([c["requestPath"]] + scope))
