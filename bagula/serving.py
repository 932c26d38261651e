"""Serving the API in several worker processes that share the load evenly.

uvicorn's own multi-worker mode gives every worker the one listening socket. A worker that wakes
accepts every connection waiting (asyncio and libuv accept until the backlog is empty), so a few
long-lived client connections, such as SDKs posting batch after batch, can all land on one
worker while the others idle: measured with 8 clients and 2 workers, one worker at 94 % CPU,
the other at 0.2 %, and ingest at half the rate. Here each worker listens on a socket of its
own with SO_REUSEPORT, and the kernel spreads new connections over them (as nginx's
``reuseport`` does). uvicorn still supervises the workers (restarts, health checks, signals).
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from uvicorn import Config, Server
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

logger = logging.getLogger("uvicorn.error")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _listener_of_this_worker(host: str, port: int) -> socket.socket:
    """Runs in the worker: its own socket on the shared port."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        logger.error("cannot listen on %s:%s: %s", host, port, exc)
        # uvicorn's supervisor stops, rather than restarting a worker that cannot start.
        sys.exit(STARTUP_FAILURE)
    return sock


class WorkerListener:
    """Passed to each worker process in place of a socket: unpickled there (uvicorn starts its
    workers with ``spawn``), it becomes that worker's own listening socket."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return _listener_of_this_worker, (self.host, self.port)


def port_taken(host: str, port: int) -> OSError | None:
    """None when nothing holds the port, else the error binding it gave. Checked once
    without SO_REUSEPORT: the workers' sockets would otherwise share a port another server
    already holds with it, silently splitting its traffic."""
    probe = socket.socket(_family(host), socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((host, port))
    except OSError as exc:
        return exc
    finally:
        probe.close()
    return None


def serve(config: Config) -> None:
    """Serve ``config`` (an import string app) with ``config.workers`` processes."""
    if config.workers == 1:
        Server(config).run()
        return
    if not hasattr(socket, "SO_REUSEPORT"):  # not Linux or BSD: uvicorn's shared socket
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    error = port_taken(config.host, config.port)
    if error is not None:
        logger.error("cannot listen on %s:%s: %s", config.host, config.port, error)
        sys.exit(STARTUP_FAILURE)
    logger.info("Bagula API on http://%s:%d, %d workers, one socket each",
                config.host, config.port, config.workers)
    Multiprocess(config, sockets=[WorkerListener(config.host, config.port)]).run()  # type: ignore[list-item]

