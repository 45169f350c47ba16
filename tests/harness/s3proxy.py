"""An HTTP proxy in front of an S3 server (MinIO) that forwards every request unchanged (Host
and signature included), but never answers a request for a key containing ``hang`` (an object
whose read never returns) and answers every GET ``delay`` seconds late (a slow store)."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class S3Proxy:
    """``url``: the proxy's ``http://127.0.0.1:PORT``; :meth:`close` ends it (and the hung requests)."""

    def __init__(self, upstream: str, hang: str | None = None, delay: float = 0.0) -> None:
        released = self.released = threading.Event()
        target = urlsplit(upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                if hang and hang in self.path:
                    released.wait()  # accepted, never answered (until the proxy closes)
                    self.close_connection = True
                    return
                if delay and self.command == "GET":
                    time.sleep(delay)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                reply = conn.getresponse()
                data = reply.read()
                head = self.command == "HEAD"  # its Content-Length is the object's, kept as it is
                self.send_response_only(reply.status, reply.reason)
                for key, value in reply.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection") and (
                            head or key.lower() != "content-length"):
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
