"""API_PROCESSES > 1: several API processes on one port, each with a listening socket of its own.

Processes that share one listening socket (uvicorn's own workers) do not share its connections:
the process that wakes first accepts every connection waiting, and a keep-alive connection then
stays with it. Sixteen phones connecting at once all landed in one process while the others
idled. With a socket per process bound with SO_REUSEPORT, the kernel spreads new connections
across the processes instead.

The parent only supervises: it starts the processes, starts a new one when one dies, and on
SIGINT or SIGTERM lets them finish what they are answering (uvicorn's graceful shutdown).
The kernel's placement of connections is evened out by service/connection_shares.py.
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import MutableSequence
from multiprocessing import connection
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any

import structlog

from service.connection_shares import EvenShares, Shares

log = structlog.get_logger("kindsync.api")

# How long the processes get to finish after Ctrl-C or SIGTERM, beyond uvicorn's own grace.
_STOP_MARGIN_S = 5.0
# How often an API process publishes its connection count when idle.
_PUBLISH_EVERY_S = 0.5
# prctl(2): the signal a process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def _stop_with(supervisor: int) -> None:
    """Be told to stop (SIGTERM) when the supervisor dies, even by SIGKILL: an orphan would go on
    serving the port beside the processes of the next start, with the code of the last one."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        log.warning("api_process_not_tied_to_supervisor", errno=ctypes.get_errno())
    if os.getppid() != supervisor:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port that other processes may bind as well (SO_REUSEPORT)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def serve(processes: int, options: dict[str, Any]) -> int:
    """Run `processes` API processes with uvicorn `options` (host and port included) until stopped."""
    context = multiprocessing.get_context("spawn")
    # Connections each process holds (service/connection_shares.py), one slot per process.
    counts = context.RawArray("i", processes)
    start = functools.partial(_start, context, options, counts)
    running = [start(slot) for slot in range(processes)]
    stopping: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        # Wakes when a process ends (its sentinel), and each second to see whether to stop.
        ended = connection.wait([process.sentinel for process in running], timeout=1.0)
        for index, process in enumerate(running):
            if process.sentinel in ended and not stopping:
                process.join()
                log.warning("api_process_replaced", exit_code=process.exitcode)
                counts[index] = 0
                running[index] = start(index)

    # A signal sent to this process alone (a supervisor's SIGTERM) must reach the API processes; one
    # that already has Ctrl-C from the terminal takes the SIGTERM as the same request to finish.
    for process in running:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + options.get("timeout_graceful_shutdown", 10) + _STOP_MARGIN_S
    for process in running:
        process.join(max(deadline - time.monotonic(), 0.1))
        if process.is_alive():
            process.kill()
    return 0


def _start(context: SpawnContext, options: dict[str, Any], counts: MutableSequence[int], slot: int) -> SpawnProcess:
    process = context.Process(target=_serve_one, args=(options, os.getpid(), counts, slot), daemon=False)
    process.start()
    return process


def _serve_one(options: dict[str, Any], supervisor: int, counts: MutableSequence[int], slot: int) -> None:
    """One API process: its own socket on the shared port, its own app from the environment, and
    its connections kept to an even share."""
    import uvicorn

    from service.app import app_from_environment

    _stop_with(supervisor)
    sock = listening_socket(options["host"], options["port"])
    shares = Shares(counts, slot)
    server = uvicorn.Server(
        uvicorn.Config(EvenShares(app_from_environment(), shares, lambda: _held(server)), **options)
    )
    threading.Thread(target=_publish, args=(shares, server), name="connection-shares", daemon=True).start()
    server.run(sockets=[sock])


def _held(server: Any) -> int:
    """Connections a uvicorn server holds open."""
    return len(server.server_state.connections)


def _publish(shares: Shares, server: Any) -> None:
    """Keep this process's count fresh while it answers nothing (a process only publishes as it
    answers, and one whose connections all closed would otherwise look busy)."""
    while True:
        shares.publish(_held(server))
        time.sleep(_PUBLISH_EVERY_S)
