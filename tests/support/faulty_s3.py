#!/usr/bin/env python3
"""TEST TOOL: a fault-injecting HTTP reverse proxy in front of a moto S3 server. Stdlib only.

For the store-fault test of the continuous loader: the loader writes to S3 through this proxy,
which (at random, with the probabilities given) turns S3 answers into the failures a real store
produces, so the test can check that the loader neither loses nor duplicates data when

  - the answer is lost after the write happened    (--lost: forwarded, then the connection is
                                                      reset with no response at all),
  - S3 answers 500 after the write happened         (--after-500: forwarded, then
                                                      500 InternalError),
  - S3 answers 503 SlowDown before writing anything (--slowdown: NOT forwarded).

It also serves as a slow store for the benchmark (--delay-ms).

  faulty_s3.py --upstream 127.0.0.1:MOTO_PORT [--listen 0] [--port-file FILE]
               [--slowdown P] [--lost P] [--after-500 P] [--delay-ms N]
               [--methods PUT,POST,DELETE,GET,HEAD] [--seed S] [--stats FILE]
               [--rewrite-host] [--verbose]

--listen 0 (the default) binds a free port on 127.0.0.1; the bound port is printed as the first
line of stdout (and written to --port-file, if given) once the proxy accepts connections.

Which requests get faults: only those whose method is in --methods and whose path is inside a
bucket: an object (`/bucket/key...`), or a bucket-level request with a query string other than a
PUT (listing `GET /bucket?list-type=2...`, multi-object delete `POST /bucket?delete`). Never the
service root `/`, nor a bare `/bucket` (create, head, delete bucket), nor `PUT /bucket?...`
(bucket configuration), so test setup can go through the proxy reliably. Path-style addressing
only (moto's default for an IP endpoint); a virtual-hosted request is seen as a bucket request.
One uniform draw per eligible request picks at most one fault: slowdown with probability P1,
lost with P2, after-500 with P3 (P1 + P2 + P3 <= 1). --delay-ms delays every request, eligible
or not, before it is forwarded.

Forwarding: method, path and query, every header except the hop-by-hop ones (Connection,
Keep-Alive, Transfer-Encoding, TE, Trailer, Upgrade, Proxy-*) and Expect (this proxy answers
100-continue itself). Host is kept as the client sent it (so a SigV4 signature stays valid for an
upstream that checks it; moto does not check, and serves path-style requests whatever the Host),
or set to the upstream with --rewrite-host. A request body is read whole (Content-Length, or a
`Transfer-Encoding: chunked` body, decoded) and forwarded with a Content-Length. The upstream's
status, headers (minus hop-by-hop) and body come back with a Content-Length, on an HTTP/1.1
persistent connection; one thread per client connection, one upstream connection per client
connection.

--stats FILE: every second and on SIGTERM/SIGINT, a JSON object with the counts
{requests, slowdown, lost, after_500, forwarded, upstream_errors} is written to FILE (atomically:
a temporary file renamed). `forwarded` counts every request sent upstream, the lost and
after-500 ones included; `upstream_errors` the requests whose upstream exchange failed (answered
502 Bad Gateway).
"""
import argparse
import http.client
import json
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
SLOWDOWN = (503, "SlowDown", "Please reduce your request rate.")
INTERNAL = (500, "InternalError", "We encountered an internal error. Please try again.")
BAD_GATEWAY = (502, "InternalError", "faulty_s3: the upstream exchange failed.")


class Stats:
    KEYS = ("requests", "slowdown", "lost", "after_500", "forwarded", "upstream_errors")

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(self.KEYS, 0)

    def add(self, key):
        with self.lock:
            self.counts[key] += 1

    def snapshot(self):
        with self.lock:
            return dict(self.counts)

    def write(self):
        if not self.path:
            return
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.snapshot(), f)
            f.write("\n")
        os.replace(tmp, self.path)


class Faults:
    def __init__(self, args):
        self.slowdown, self.lost, self.after_500 = args.slowdown, args.lost, args.after_500
        self.delay = args.delay_ms / 1000.0
        self.methods = {m.strip().upper() for m in args.methods.split(",") if m.strip()}
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()

    def eligible(self, method, target):
        if method not in self.methods:
            return False
        parts = urlsplit(target)
        segments = parts.path.lstrip("/").split("/", 1)
        if not segments[0]:
            return False  # the service root
        if len(segments) == 2 and segments[1]:
            return True  # an object
        return bool(parts.query) and method != "PUT"  # listing, multi-object delete

    def draw(self, method, target):
        """None, "slowdown", "lost" or "after_500"."""
        if not self.eligible(method, target):
            return None
        with self.lock:
            u = self.rng.random()
        if u < self.slowdown:
            return "slowdown"
        if u < self.slowdown + self.lost:
            return "lost"
        if u < self.slowdown + self.lost + self.after_500:
            return "after_500"
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faulty_s3"
    upstream = None  # http.client.HTTPConnection of this client connection

    # Set on the class by main().
    faults: Faults
    stats: Stats
    upstream_addr: tuple
    rewrite_host = False
    verbose = False

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("faulty_s3: %s %s\n" % (self.address_string(), fmt % args))

    def finish(self):
        try:
            super().finish()
        finally:
            if self.upstream is not None:
                self.upstream.close()

    # Every method goes through one path.
    def do_GET(self):
        self.proxy()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("EOF in a chunked request body")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # Trailers, up to the empty line.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunk = self.rfile.read(size)
                if len(chunk) != size:
                    raise ConnectionError("EOF in a chunked request body")
                chunks.append(chunk)
                self.rfile.readline(65537)  # the CRLF after the chunk
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        n = int(length)
        body = self.rfile.read(n) if n else b""
        if len(body) != n:
            raise ConnectionError("EOF in a request body")
        return body

    def forward(self, body):
        """Sends the request upstream; returns (status, reason, headers, body)."""
        drop = set(HOP_BY_HOP) | {"expect", "content-length"}
        for token in self.headers.get("Connection", "").split(","):
            drop.add(token.strip().lower())
        if self.rewrite_host:
            drop.add("host")
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in drop]
        if self.rewrite_host or "Host" not in self.headers:
            headers.append(("Host", "%s:%d" % self.upstream_addr))
        if body is not None:
            headers.append(("Content-Length", str(len(body))))
        for attempt in (0, 1):
            reused = self.upstream is not None and self.upstream.sock is not None
            if self.upstream is None:
                self.upstream = http.client.HTTPConnection(*self.upstream_addr, timeout=120)
            conn = self.upstream
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in headers:
                    conn.putheader(k, v)
                conn.endheaders(body)
                resp = conn.getresponse()
                data = resp.read()
                out = (resp.status, resp.reason, resp.getheaders(), data)
                if resp.will_close:
                    conn.close()
                return out
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                conn.close()
                # A kept-alive upstream connection that the upstream had closed while idle: the
                # request was never read, so sending it again on a new connection is safe. A
                # failure on a fresh connection is not retried (the write may have happened).
                if attempt or not reused:
                    raise
            except Exception:
                conn.close()
                raise

    def respond(self, status, reason, headers, body):
        self.send_response(status, reason)
        no_body = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        drop = set(HOP_BY_HOP) | {"content-length", "date", "server"}
        upstream_length = None
        for k, v in headers:
            lk = k.lower()
            if lk == "content-length":
                upstream_length = v
            if lk not in drop:
                self.send_header(k, v)
        if self.command == "HEAD":
            if upstream_length is not None:
                self.send_header("Content-Length", upstream_length)
        elif status not in (204, 304) and not 100 <= status < 200:
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not no_body and body:
            self.wfile.write(body)

    def s3_error(self, status, code, message):
        rid = uuid.uuid4().hex[:16].upper()
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{rid}</RequestId></Error>"
        ).encode()
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", rid)]
        if self.command == "HEAD":
            headers.append(("Content-Length", "0"))  # S3 sends no error body for HEAD
        self.respond(status, None, headers, body)

    def reset(self):
        """Drops the client connection with no response: an RST (SO_LINGER 0), so the client
        sees a connection reset (or an EOF), never an HTTP answer."""
        self.close_connection = True
        try:
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass

    def proxy(self):
        self.stats.add("requests")
        try:
            body = self.read_body()
        except (ConnectionError, ValueError):
            self.close_connection = True
            return
        fault = self.faults.draw(self.command, self.path)
        if self.faults.delay:
            time.sleep(self.faults.delay)
        if fault == "slowdown":
            self.stats.add("slowdown")
            self.s3_error(*SLOWDOWN)
            return
        self.stats.add("forwarded")
        try:
            status, reason, headers, data = self.forward(body)
        except (OSError, http.client.HTTPException) as e:
            self.stats.add("upstream_errors")
            self.log_message("upstream failed: %r", e)
            self.close_connection = True
            self.s3_error(*BAD_GATEWAY)
            return
        if fault == "lost":
            self.stats.add("lost")
            self.reset()
        elif fault == "after_500":
            self.stats.add("after_500")
            self.s3_error(*INTERNAL)
        else:
            self.respond(status, reason, headers, data)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def handle_error(self, request, client_address):
        # A client that went away mid-exchange is not an error of this tool.
        if Handler.verbose:
            super().handle_error(request, client_address)


def probability(s):
    p = float(s)
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"{s}: not a probability")
    return p


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--listen", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--upstream", default="127.0.0.1:5000", help="HOST:PORT of the S3 server")
    p.add_argument("--slowdown", type=probability, default=0.0)
    p.add_argument("--lost", type=probability, default=0.0)
    p.add_argument("--after-500", type=probability, default=0.0)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--methods", default="PUT,POST,DELETE,GET,HEAD")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stats")
    p.add_argument("--port-file")
    p.add_argument("--rewrite-host", action="store_true", help="send Host: the upstream")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    if args.slowdown + args.lost + args.after_500 > 1.0 + 1e-9:
        p.error("--slowdown + --lost + --after-500 must not exceed 1")
    host, _, port = args.upstream.rpartition(":")
    stats = Stats(args.stats)
    Handler.faults = Faults(args)
    Handler.stats = stats
    Handler.upstream_addr = (host or "127.0.0.1", int(port))
    Handler.rewrite_host = args.rewrite_host
    Handler.verbose = args.verbose

    server = Server((args.host, args.listen), Handler)
    bound = server.server_address[1]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    serve = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    serve.daemon = True
    serve.start()
    stats.write()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{bound}\n")
        os.replace(tmp, args.port_file)
    sys.stdout.write(f"{bound}\n")
    sys.stdout.flush()
    while not stop.wait(1.0):
        stats.write()
    stats.write()
    server.shutdown()
    server.server_close()
    stats.write()


if __name__ == "__main__":
    main()
