"""A TCP relay on loopback in front of a test dependency: it counts the bytes the
dependency sends, can slow them down, and can be cut and restored, to see how the
registry behaves when an upstream or PostgreSQL goes away and comes back."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``.

    ``bytes_down`` counts what the target sent; ``rate`` (bytes per second) throttles
    it. :meth:`cut` drops every connection and stops listening; :meth:`restore` listens
    on the same port again.
    """

    def __init__(self, target_port: int, rate: float | None = None) -> None:
        self.target_port = target_port
        self.rate = rate
        self.bytes_down = 0
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``, as used in image references."""
        return f"127.0.0.1:{self.port}"

    def restore(self) -> None:
        """Listen (again, on the same port) and forward new connections."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Stop listening and reset every forwarded connection."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    stop = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _address = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, down: bool) -> None:
        throttled = down and self.rate is not None
        chunk = max(1024, int(self.rate / 20)) if throttled and self.rate else 65536
        try:
            while data := source.recv(chunk):
                if down:
                    with self._lock:
                        self.bytes_down += len(data)
                    if self.rate is not None:
                        time.sleep(len(data) / self.rate)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
