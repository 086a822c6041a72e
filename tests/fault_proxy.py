"""A fault-injecting HTTP proxy between the storage client and fake-gcs-server.

It forwards every request to the emulator and, at a configurable rate (seeded), instead:
- answers 503 or 429 without forwarding;
- resets the connection in the middle of a download body (after forwarding);
- resets the connection while an upload request's body is being received (not forwarded);
- stalls the response for a while, then forwards.
It can also add a fixed latency to every request (`latency_seconds`), as a slow link does.
Two more kinds, not in the default mix, act on resumable upload chunks (PUTs to a session):
- `partial_upload` forwards only the first part of a chunk, as a service that kept part of it
  does, and returns the emulator's 308 (which says how much it holds);
- `lost_upload_response` forwards the whole chunk, then resets instead of answering, so the
  client cannot know the chunk arrived;
- `stuck_upload` forwards nothing and answers 308 with what was acknowledged before the chunk
  (no Range header before the first), as a service that kept none of it.
Rules can also make requests whose path matches a pattern fail permanently (403, 404).

URLs the emulator hands out (resumable upload sessions, media links) are rewritten to point at
the proxy, so no request goes around it. It listens on 127.0.0.1 only and stops with `stop()`.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

FAULT_KINDS = ("503", "429", "reset_read", "reset_upload", "stall")
UPLOAD_CHUNK_KINDS = ("partial_upload", "lost_upload_response", "stuck_upload")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class FaultPlan:
    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    stall_seconds: float = 1.5
    # (regex on the unquoted request path, HTTP status): permanent failures, never random.
    permanent: list[tuple[str, int]] = field(default_factory=list)
    # Text put into every error body, to check that servers' words never leak secrets;
    # "{authorization}" becomes the request's Authorization header, as a careless server echoes.
    error_text: str = ""
    # Inject each kind at least once, at the first request it applies to, whatever the dice say.
    each_kind_once: bool = True
    # Added to every request before it is handled, as a slow link does (a round trip of a
    # distant region): what bounds `convert` at full scale.
    latency_seconds: float = 0.0


class _QuietServer(ThreadingHTTPServer):
    # socketserver's default backlog is 5: a burst of new connections (a client issuing dozens
    # of requests at once) then loses SYNs and waits out TCP's 1 s retransmission, a delay no
    # real storage service adds.
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # resets are the point; the default prints a traceback for each


class FaultProxy:
    def __init__(self, upstream: str, plan: FaultPlan | None = None) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.plan = plan or FaultPlan()
        self.injected: Counter[str] = Counter()
        self.requests = 0
        # (arrival, answer, method, path) of every request handled, wall-clock seconds, in the
        # order answered: how many a client had in flight at once, and when.
        self.handled: list[tuple[float, float, str, str]] = []
        self.authorizations: set[str] = set()
        self.without_authorization = 0  # requests that carried no Authorization header
        self._rng = random.Random(self.plan.seed)
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def max_in_flight(self, since: float = 0.0) -> int:
        """The most requests (arrived at `since` or later) that were in flight at once."""
        with self._lock:
            spans = [(a, b) for a, b, _m, _p in self.handled if a >= since]
        edges = sorted([(a, 1) for a, _b in spans] + [(b, -1) for _a, b in spans])
        most = now = 0
        for _at, step in edges:
            now += step
            most = max(most, now)
        return most

    def set_plan(self, plan: FaultPlan) -> None:
        with self._lock:
            self.plan = plan
            self._rng = random.Random(plan.seed)

    def _decide(self, method: str, path: str, has_body: bool) -> str | int | None:
        with self._lock:
            self.requests += 1
            for pattern, status in self.plan.permanent:
                if re.search(pattern, unquote(path)):
                    self.injected[f"permanent_{status}"] += 1
                    return status
            if self.plan.rate <= 0:
                return None
            possible = [
                k
                for k in self.plan.kinds
                if (k != "reset_upload" or has_body)
                and (k != "reset_read" or (method == "GET" and "alt=media" in path))
                and (
                    k not in UPLOAD_CHUNK_KINDS
                    or (method == "PUT" and "upload_id=" in path and has_body)
                )
            ]
            not_yet = [k for k in possible if self.plan.each_kind_once and not self.injected[k]]
            if not_yet:
                kind = not_yet[0]
            elif possible and self._rng.random() < self.plan.rate:
                kind = self._rng.choice(possible)
            else:
                return None
            self.injected[kind] += 1
            return kind

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _reset(self) -> None:
                # SO_LINGER 0: close() sends RST, as a dropped connection does.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()

            def _error(self, status: int) -> None:
                echo = proxy.plan.error_text.replace(
                    "{authorization}", self.headers.get("Authorization", "")
                )
                body = json.dumps(
                    {"error": {"code": status, "message": f"injected {status} {echo}".strip()}}
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                arrived = time.time()
                try:
                    self._handle_request()
                finally:
                    with proxy._lock:
                        proxy.handled.append((arrived, time.time(), self.command, self.path))

            def _handle_request(self) -> None:
                if proxy.plan.latency_seconds:
                    time.sleep(proxy.plan.latency_seconds)
                if self.headers.get("Authorization"):
                    proxy.authorizations.add(self.headers["Authorization"])
                else:
                    proxy.without_authorization += 1
                length = int(self.headers.get("Content-Length") or 0)
                decision = proxy._decide(self.command, self.path, length > 0)
                if decision == "reset_upload":
                    self.rfile.read(length // 2)
                    self._reset()
                    return
                body = self.rfile.read(length) if length else b""
                if isinstance(decision, int):
                    self._error(decision)
                    return
                if decision in ("503", "429"):
                    self._error(int(decision))  # type: ignore[arg-type]
                    return
                if decision == "stall":
                    time.sleep(proxy.plan.stall_seconds)
                if decision == "stuck_upload":
                    self._kept_nothing()
                    return
                if decision == "partial_upload":
                    body = self._keep_first_part(body)
                status, headers, data = self._forward(body)
                if decision == "lost_upload_response":
                    self._reset()
                    return
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if decision == "reset_read" and len(data) > 1:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self._reset()
                    return
                self.wfile.write(data)

            def _kept_nothing(self) -> None:
                match = _CONTENT_RANGE.fullmatch(self.headers.get("Content-Range", ""))
                start = int(match.group(1)) if match else 0
                self.send_response(308)
                if start:
                    self.send_header("Range", f"bytes=0-{start - 1}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _keep_first_part(self, body: bytes) -> bytes:
                """The first half of the chunk (in 256 KiB units, as GCS keeps), sent on as a
                chunk of an upload of unknown size, so the emulator answers 308."""
                match = _CONTENT_RANGE.fullmatch(self.headers.get("Content-Range", ""))
                keep = (len(body) // 2) // (256 * 1024) * (256 * 1024)
                if match is None or keep == 0:
                    return body
                start = int(match.group(1))
                del self.headers["Content-Range"]
                self.headers["Content-Range"] = f"bytes {start}-{start + keep - 1}/*"
                del self.headers["Content-Length"]
                self.headers["Content-Length"] = str(keep)
                return body[:keep]

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=120
                )
                try:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP
                    }
                    headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    out_headers = []
                    ours = f"127.0.0.1:{proxy.port}".encode()
                    theirs = f"{proxy.upstream_host}:{proxy.upstream_port}".encode()
                    for name, value in response.getheaders():
                        if name.lower() in _HOP_BY_HOP or name.lower() == "content-length":
                            continue
                        out_headers.append((name, value.replace(theirs.decode(), ours.decode())))
                    content_type = response.getheader("Content-Type") or ""
                    if "json" in content_type:
                        data = data.replace(theirs, ours)
                    return response.status, out_headers, data
                finally:
                    upstream.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        return Handler
