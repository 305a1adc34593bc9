"""A TCP server that speaks just enough of Redis's protocol for connection tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def commands(buffer: bytearray) -> Iterator[list[bytes]]:
    """Whole RESP commands off the front of `buffer` (consumed as they are read)."""
    while buffer.startswith(b"*") and b"\r\n" in buffer:
        header, rest = bytes(buffer).split(b"\r\n", 1)
        parts: list[bytes] = []
        for _ in range(int(header[1:])):
            if b"\r\n" not in rest:
                return
            length, rest = rest.split(b"\r\n", 1)
            size = int(length[1:])
            if len(rest) < size + 2:
                return
            parts.append(rest[:size])
            rest = rest[size + 2 :]
        del buffer[: len(buffer) - len(rest)]
        yield parts


# What the server does with what a connection has sent so far: answer the commands
# it wants to (on the socket it is given) and return False to stop reading for good.
Serve = Callable[[socket.socket, bytearray], bool]


def answer_handshake(conn: socket.socket, buffer: bytearray, *, ignore: bytes = b"") -> None:
    """+PONG to PING, +OK to everything else but the commands named `ignore`."""
    for command in commands(buffer):
        name = command[0].upper()
        if name != ignore:
            conn.sendall(b"+PONG\r\n" if name == b"PING" else b"+OK\r\n")


@contextmanager
def fake_redis(serve: Serve, *, receive_buffer: int | None = None) -> Iterator[str]:
    """A server on a free port calling `serve` after every read; yields its redis:// URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def read(conn: socket.socket) -> None:
        buffer = bytearray()
        while not stop.is_set():
            try:
                chunk = conn.recv(65536)
            except (TimeoutError, OSError):
                continue
            if not chunk:
                return
            buffer += chunk
            if not serve(conn, buffer):
                return  # deaf from here on; the connection stays open until the end

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            if receive_buffer is not None:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            conn.settimeout(0.1)
            accepted.append(conn)
            threading.Thread(target=read, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()
