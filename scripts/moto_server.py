"""moto server with DynamoDB's per-item atomicity.

moto 5.2.5 serves each request on its own thread and applies a DynamoDB write as read, check, modify, store with
no lock: two concurrent `ADD`s on one item can lose one, and two conditional puts of one key can both win. The
protocol relies on DynamoDB applying each write to an item atomically, so this runs moto's own application with
DynamoDB requests serialised (SQS long polls and every other service stay concurrent).

Usage: moto_server.py HOST PORT
"""

import sys
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


def serialise_dynamodb(app):
    lock = threading.Lock()

    def wrapped(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with lock:
                # The body is produced inside the call, so the whole write happens under the lock.
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wrapped


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, serialise_dynamodb(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
