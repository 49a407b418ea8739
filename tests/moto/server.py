#!/usr/bin/env python3
"""Runs moto's ECS (and the EC2 it needs), patched toward real ECS, with the test harness routes.

Usage: server.py [--port N] [--region R] [--verbose] [--ignore-stdin]

Binds 127.0.0.1:N (0 picks a free port) and, once it accepts connections, prints exactly one
line `PORT <n>` to stdout. Everything else goes to stderr. It stops when its stdin reaches end
of file (the process that spawned it with a pipe has gone, even if it was killed) or on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any, TextIO

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--region", default="us-east-1", help="the region the harness routes seed")
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=os.environ.get("MOTO_HARNESS_VERBOSE") == "1",
        help="log requests and harness decisions to stderr (also MOTO_HARNESS_VERBOSE=1)",
    )
    parser.add_argument(
        "--ignore-stdin", action="store_true", help="keep running at stdin EOF (for a manual run)"
    )
    return parser.parse_args(argv)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("werkzeug").setLevel(logging.INFO if verbose else logging.WARNING)


def build_server(port: int, region: str) -> Any:
    """moto's dispatcher behind the harness middleware, on a threaded werkzeug server."""
    sys.path.insert(0, HERE)
    import ecs_patches  # refuses any moto but 5.2.5

    ecs_patches.apply()
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends
    from moto.ecs.models import ecs_backends
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    from harness import Harness

    # Build the backends now (EC2 loads its AMI catalogue) so the first request is not slow.
    ec2_backends[DEFAULT_ACCOUNT_ID][region]
    ecs_backends[DEFAULT_ACCOUNT_ID][region]
    app = Harness(DomainDispatcherApplication(create_backend_app), region=region)
    return make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)


def wait_until_accepting(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30):
        pass


def watch_stdin(stop: threading.Event) -> None:
    # A raw read on the descriptor: a buffered reader would hold its lock at interpreter exit.
    try:
        fd = sys.stdin.fileno() if sys.stdin is not None else -1
        while fd >= 0 and os.read(fd, 4096):
            pass
    except (OSError, ValueError):
        pass
    logging.getLogger("moto-harness").info("stdin closed: stopping")
    stop.set()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # Only the PORT line may reach stdout; anything moto or a library prints goes to stderr.
    port_out: TextIO = sys.stdout
    sys.stdout = sys.stderr
    configure_logging(args.verbose)
    try:
        server = build_server(args.port, args.region)
    except Exception as err:
        print(f"server.py: cannot start: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    port = server.server_port
    os.environ.setdefault("MOTO_PORT", str(port))
    # A short poll interval keeps shutdown prompt once stdin closes.
    threading.Thread(target=server.serve_forever, args=(0.1,), name="moto-server", daemon=True).start()
    wait_until_accepting(port)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if not args.ignore_stdin:
        threading.Thread(target=watch_stdin, args=(stop,), name="stdin-watch", daemon=True).start()
    port_out.write(f"PORT {port}\n")
    port_out.flush()
    # A timed wait lets the main thread run signal handlers promptly.
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
