"""moto server with DynamoDB's per-item atomicity and SQS's long poll, without two of its costs per message.

moto 5.2.5 serves each request on its own thread and applies a DynamoDB write as read, check, modify, store with
no lock: two concurrent `ADD`s on one item can lose one, and two conditional puts of one key can both win. The
protocol relies on DynamoDB applying each write to an item atomically, so this runs moto's own application with
DynamoDB requests serialised (SQS long polls and every other service stay concurrent).

The emulator runs on one core (Python's lock); what it spends there sets the pace of every request, and so how
many requests of the fleet overlap and share a batch. Two of its costs are its own, not the service's, and are
taken out here (`long_poll_like_sqs`, `queue_attributes_without_counting`; docs/benchmarks.md has the figures).

Usage: moto_server.py HOST PORT
"""

import importlib.metadata
import logging
import sys
import threading
import time

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


def long_poll_like_sqs():
    """moto 5.2.5's long poll on a FIFO queue takes one copy of the message groups in flight when it begins, and
    while every visible message is in one of them it loops without waiting (the queue has visible messages, so
    its wait returns at once) until the poll's time runs out: it holds a core and never sees a group freed
    meanwhile. SQS answers a long poll as soon as a message can be received. So: receive without waiting, and
    until the poll's time is up try again after a send, or after 10 ms while visible messages wait behind groups
    in flight (a delete frees a group without a signal), or after a second (a message becoming visible again, as
    moto's own wait)."""
    from moto.sqs.models import SQSBackend

    receive = SQSBackend.receive_message

    def receive_message(self, queue_name, count, wait_seconds_timeout, visibility_timeout, *args):
        deadline = time.monotonic() + (wait_seconds_timeout or 0)
        while True:
            messages = receive(self, queue_name, count, 0, visibility_timeout, *args)
            remaining = deadline - time.monotonic()
            if messages or remaining <= 0:
                return messages
            queue = self.get_queue(queue_name)
            with queue._messages_lock:
                # Looked at under the lock a send notifies under: a send in between still wakes this wait.
                blocked = bool(queue.messages)
                queue._messages_lock.wait(timeout=min(0.01 if blocked else 1.0, remaining))

    SQSBackend.receive_message = receive_message


def queue_attributes_without_counting():
    """moto 5.2.5 builds every attribute of a queue (`Queue.attributes`) to read one, and three of them count the
    queue's messages: each message sent in a `SendMessageBatch` reads `ContentBasedDeduplication` six times and each
    message received reads `MessageRetentionPeriod` three times, so a message costs the emulator nine to eighteen
    passes over the queue.
    Under load that held the one core it runs on (most of its samples in a profile) and every other request waited.
    Here a caller that does not ask for a count gets the attributes without counting (the counts read as 0, and
    only `GetQueueAttributes` asking for them, or for all, reads them)."""
    from moto.sqs.models import Queue, SQSBackend

    local = threading.local()
    attributes = Queue.attributes.fget

    class NotCounted:
        def __init__(self, queue):
            self.queue = queue

        def __getattr__(self, name):
            if name.startswith("approximate_number_of_messages"):
                return 0
            return getattr(self.queue, name)

    def lazy_attributes(self):
        if getattr(local, "no_counts", False):
            return attributes(NotCounted(self))
        return attributes(self)

    def without_counts(method, wanted=lambda *args, **kwargs: False):
        def wrapped(*args, **kwargs):
            before = getattr(local, "no_counts", False)
            local.no_counts = not wanted(*args, **kwargs)
            try:
                return method(*args, **kwargs)
            finally:
                local.no_counts = before

        return wrapped

    def asks_for_counts(self, queue_name, attribute_names, *args, **kwargs):
        return any(name == "All" or name.startswith("ApproximateNumberOfMessages") for name in attribute_names)

    Queue.attributes = property(lazy_attributes)
    SQSBackend._validate_message = without_counts(SQSBackend._validate_message)
    SQSBackend.send_message = without_counts(SQSBackend.send_message)
    Queue.add_message = without_counts(Queue.add_message)
    SQSBackend.get_queue_attributes = without_counts(SQSBackend.get_queue_attributes, asks_for_counts)


def main():
    # The patches below replace moto's own methods: checked against this version only (scripts/requirements-moto.txt).
    version = importlib.metadata.version("moto")
    if version != "5.2.5":
        sys.exit(f"moto_server.py patches moto 5.2.5; found {version}: check the patches against it and update the pin")
    long_poll_like_sqs()
    queue_attributes_without_counting()
    # A line a request on the log cost the emulator a tenth of its time under load; errors are still logged.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, serialise_dynamodb(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
