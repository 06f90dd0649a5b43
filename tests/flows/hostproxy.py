"""A tiny HTTP forward proxy on 127.0.0.1 that makes compose host names reachable in tests.

Clients given ``HTTP_PROXY=http://127.0.0.1:<port>`` keep the URLs of the compose network
(``http://mlflow:5000``, ``http://prefect-server:4200/api``): the proxy sends each request, with
its ``Host`` header unchanged, to the local port that plays that service. So a server that checks
the Host header (MLflow's ``--allowed-hosts``) sees exactly what it sees in compose. Plain HTTP
requests are forwarded one per connection (``Connection: close``); ``CONNECT`` (websockets) is
tunnelled. Unknown hosts, and servers not up, get 502.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from collections import Counter


class HostProxy:
    """``routes``: ``"host:port"`` as clients write it → local port of the server playing it."""

    def __init__(self, routes: dict[str, int]) -> None:
        self.routes = dict(routes)
        self.hosts: Counter[str] = Counter()  # Host headers forwarded, per route
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "HostProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- one client connection -------------------------------------------------------------------
    def _handle(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                return
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = lines[1:]
        if method == "CONNECT":
            upstream = self._connect(target)
            if upstream is None:
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            self.hosts[target] += 1
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
        else:
            if not target.startswith("http://"):
                client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            authority, _, path = target[len("http://"):].partition("/")
            upstream = self._connect(authority)
            if upstream is None:
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            host = next((h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("host:")), authority)
            self.hosts[host] += 1
            keep = [h for h in headers if not h.lower().startswith(("connection:", "proxy-connection:", "keep-alive:"))]
            out = [f"{method} /{path} {version}", *keep, "Connection: close"]
            upstream.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + rest)
        self._pipe(client, upstream)

    def _connect(self, authority: str) -> socket.socket | None:
        port = self.routes.get(authority)
        if port is None:
            return None
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=30)
        except OSError:  # not up (yet): the client sees a 502
            return None

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        socks = [a, b]
        try:
            while True:
                ready, _, _ = select.select(socks, [], [], 300)
                if not ready:
                    return
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            b.close()
