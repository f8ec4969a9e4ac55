"""Hostile servers for the HTTP backend: raw sockets on 127.0.0.1 that misbehave on purpose."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest


class RawServer:
    """Accepts connections on 127.0.0.1 and hands each to ``behave(conn)`` in its own thread,
    after reading the request's headers and body. ``sent`` counts the bytes each connection
    managed to send before the client hung up."""

    def __init__(self, behave: Callable[[socket.socket], None]):
        self.behave = behave
        self.sent: list[int] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:
                body += conn.recv(65536)
            counter = [0]
            self.sent.append(0)
            index = len(self.sent) - 1

            def send(b: bytes) -> None:
                conn.sendall(b)
                counter[0] += len(b)
                self.sent[index] = counter[0]

            try:
                self.behave(send)
            except OSError:
                pass  # the client hung up: what we want it to do

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def raw_server():
    """A factory of :class:`RawServer`s, closed after the test."""
    servers: list[RawServer] = []

    def start(behave: Callable) -> RawServer:
        servers.append(RawServer(behave))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def trickle(data: bytes, every_s: float) -> Callable:
    """A behaviour that sends ``data`` one byte every ``every_s`` seconds."""

    def behave(send: Callable[[bytes], None]) -> None:
        for i in range(len(data)):
            send(data[i:i + 1])
            time.sleep(every_s)

    return behave
