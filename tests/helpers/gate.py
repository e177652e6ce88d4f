"""A gate in front of a fake server: a real TCP listener on 127.0.0.1 (port 0) that,
closed, takes each connection and resets it at once (the service is unreachable, as
after a network outage), and, open, relays bytes both ways to the fake behind it.

    with Gate(fake.port) as gate:      # closed
        url = gate.base + "/path"      # litwatch is configured with the gate's address
        ...
        gate.open()                    # now the fake answers
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Self


class Gate:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.is_open = False
        self.refused = 0  # connections reset while closed
        self.relayed = 0  # connections relayed while open
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="gate", daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        self.is_open = True

    def close(self) -> None:
        self.is_open = False

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if not self.is_open:
                self.refused += 1
                # SO_LINGER 0: close sends a reset, as an unreachable service's network does
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            self.relayed += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
