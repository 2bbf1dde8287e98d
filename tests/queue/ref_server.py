"""The reference Python server (starfish-server) with its queuing plugin publishing
on NATS (starfish-queuing's NatsQueue), for the queue comparison (run.sh).

usage: ref_server.py CONFIG PORT NATS_URL
The config's `queue` fields (our extension, which the reference sets in code) become
the plugin's QueueConfig map; the rest of the config is the reference's.
"""

import json
import re
import sys

import uvicorn
from fastapi import FastAPI
from starfish_queuing import QueueConfig, create_queuing_server_plugin
from starfish_queuing.nats import NatsQueue, NatsQueueOptions
from starfish_server import (
    MemoryObjectStore,
    create_cap_cert_role_resolver,
    create_in_memory_nonce_cache,
    create_in_memory_revocation_store,
    parse_config_json,
)
from starfish_server.router.route_builder import SyncRouterOptions, create_sync_router

config_path, port, nats_url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
raw = json.load(open(config_path))
queues = {}
for c in raw["collections"]:
    q = c.pop("queue", None)
    if q is not None:
        queues[c["name"]] = QueueConfig(
            topic=q.get("topic"),
            subject_param=q.get("subjectParam"),
            include_params=q.get("includeParams", False),
            include_body=q.get("includeBody", False),
            include_identity=q.get("includeIdentity", False),
            **({"subject_id_pattern": re.compile(q["subjectIdPattern"])} if "subjectIdPattern" in q else {}),
        )

queue = NatsQueue(NatsQueueOptions(servers=nats_url, name="reference"))
plugin = create_queuing_server_plugin(queue=queue, collections=queues)
app = FastAPI()
app.include_router(create_sync_router(SyncRouterOptions(
    store=MemoryObjectStore(),
    config=parse_config_json(json.dumps(raw)),
    role_resolver=create_cap_cert_role_resolver(
        nonce_cache=create_in_memory_nonce_cache(),
        revocation_store=create_in_memory_revocation_store(),
        allow_anonymous=True,
    ),
    plugins=[plugin],
)))


@app.get("/health")
async def health():
    return {"ok": True}


uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
