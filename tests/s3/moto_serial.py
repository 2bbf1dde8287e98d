"""moto in server mode, with conditional writes made atomic.

moto checks `If-Match` / `If-None-Match` and then writes without a lock, and its
server is threaded, so two conditional writes racing on one key can both pass the
check. Real S3 (and MinIO, R2, GCS) make the check and the write one step. This
launcher serves like `moto_server` but runs each object PUT under one lock, so the
compare-and-swap tests test our code rather than moto's race.
Usage: moto_serial.py HOST PORT
"""

import sys
import threading

from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.responses import S3Response

_lock = threading.Lock()
_put_object = S3Response.put_object


def put_object(self, *args, **kwargs):
    with _lock:
        return _put_object(self, *args, **kwargs)


S3Response.put_object = put_object

app = DomainDispatcherApplication(create_backend_app)
run_simple(sys.argv[1], int(sys.argv[2]), app, threaded=True, request_handler=MotoRequestHandler)
