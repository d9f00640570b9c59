#!/usr/bin/env python3
"""Checks tests/support/faulty_s3.py against a real moto S3 server, with boto3.

  .tools/venv/bin/python tests/support/faulty_s3_check.py

Starts moto_server (next to this Python, i.e. .tools/venv/bin/moto_server) on a free port and,
for each check, a faulty_s3.py proxy in front of it; the truth (is the object there?) is read
from moto directly, never through the proxy. Exits non-zero on the first failed check.
"""
import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import botocore.config
import botocore.exceptions

HERE = Path(__file__).resolve().parent
PROXY = HERE / "faulty_s3.py"
MOTO = Path(sys.executable).parent / "moto_server"
CREDS = dict(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
TMP = None  # a temporary folder, made by main()
CONNECTION_ERRORS = (botocore.exceptions.HTTPClientError, botocore.exceptions.ConnectionError)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(port, retries=None, pool=10):
    # No retries: total_max_attempts 1. (botocore's {"max_attempts": 1} means ONE RETRY, two
    # attempts in all.)
    config = botocore.config.Config(
        retries=retries or {"total_max_attempts": 1},
        s3={"addressing_style": "path"},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=pool,
    )
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", config=config, **CREDS)


def status_of(e):
    return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]


def exists(s3, bucket, key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except botocore.exceptions.ClientError as e:
        if status_of(e)[0] == 404:
            return False
        raise


def expect_client_error(fn, status, code=None):
    try:
        fn()
    except botocore.exceptions.ClientError as e:
        got = status_of(e)
        ok = got[0] == status and (code is None or got[1] == code)
        assert ok, f"expected {status} {code}, got {got}"
        return
    raise AssertionError(f"expected {status} {code}, got a success")


class Moto:
    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(MOTO), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2).read()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                assert self.proc.poll() is None, "moto_server exited"
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        self.s3 = client(self.port)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Proxy:
    """A faulty_s3.py in front of `moto`; its counts are in `stats_path` (JSON)."""

    started = 0

    def __init__(self, moto, *flags):
        Proxy.started += 1
        self.stats_path = os.path.join(TMP, f"stats{Proxy.started}.json")
        self.proc = subprocess.Popen(
            [sys.executable, str(PROXY), "--upstream", f"127.0.0.1:{moto.port}",
             "--stats", self.stats_path, *flags],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()))
        reader.daemon = True
        reader.start()
        reader.join(15)
        assert line and line[0].strip().isdigit(), f"no port announced: {line}"
        self.port = int(line[0])

    def client(self, **kw):
        return client(self.port, **kw)

    def stats(self):
        return json.loads(Path(self.stats_path).read_text())

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the proxy did not stop on a signal")
        assert rc == 0, f"the proxy exited {rc}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def check_no_faults(moto, *flags):
    with Proxy(moto, *flags) as p:
        s3 = p.client()
        bucket = "plain" + ("-rewrite" if flags else "")
        s3.create_bucket(Bucket=bucket)
        s3.head_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="a/one", Body=b"first")
        s3.put_object(Bucket=bucket, Key="a/two", Body=b"x" * 3_000_000)
        assert s3.get_object(Bucket=bucket, Key="a/one")["Body"].read() == b"first"
        assert s3.get_object(Bucket=bucket, Key="a/two")["Body"].read() == b"x" * 3_000_000
        r = s3.get_object(Bucket=bucket, Key="a/two", Range="bytes=10-19")
        assert r["Body"].read() == b"x" * 10 and r["ResponseMetadata"]["HTTPStatusCode"] == 206
        h = s3.head_object(Bucket=bucket, Key="a/two")
        assert h["ContentLength"] == 3_000_000, h
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="a/")["Contents"]]
        assert keys == ["a/one", "a/two"], keys
        expect_client_error(lambda: s3.get_object(Bucket=bucket, Key="missing"), 404, "NoSuchKey")
        expect_client_error(lambda: s3.head_object(Bucket=bucket, Key="missing"), 404)
        # A conditional create: the second must fail with 412.
        s3.put_object(Bucket=bucket, Key="cond", Body=b"1", IfNoneMatch="*")
        expect_client_error(
            lambda: s3.put_object(Bucket=bucket, Key="cond", Body=b"2", IfNoneMatch="*"),
            412,
            "PreconditionFailed",
        )
        assert moto.s3.get_object(Bucket=bucket, Key="cond")["Body"].read() == b"1"
        s3.delete_object(Bucket=bucket, Key="a/one")
        assert not exists(moto.s3, bucket, "a/one")
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a/two"}, {"Key": "cond"}]})
        assert moto.s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
        p.stop()
    print(f"ok: no faults {' '.join(flags) or '(Host kept)'}: create bucket, put, get, range get, "
          "head, list, delete, multi-delete; IfNoneMatch='*' twice -> 412")


def check_raw_http(moto):
    """Keep-alive (one socket, Content-Length on every answer) and a chunked request body."""
    bucket = "raw"
    moto.s3.create_bucket(Bucket=bucket)
    moto.s3.put_object(Bucket=bucket, Key="k", Body=b"kept alive")
    with Proxy(moto) as p:
        s3 = p.client()
        conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
        sock = None
        for i in range(5):
            url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
            u = urlsplit(url)
            conn.request("GET", f"{u.path}?{u.query}")
            r = conn.getresponse()
            assert r.status == 200 and r.read() == b"kept alive", r.status
            assert r.getheader("Content-Length") == "10", r.getheaders()
            assert sock is None or conn.sock is sock, "the proxy closed a kept-alive connection"
            sock = conn.sock
        # An error answer keeps the connection too.
        conn.request("GET", f"/{bucket}/missing")
        r = conn.getresponse()
        r.read()
        assert r.status in (403, 404) and r.getheader("Content-Length") is not None
        assert conn.sock is sock
        # A chunked request body, decoded and forwarded whole.
        url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "chunked"})
        u = urlsplit(url)
        parts = [b"abc" * 1000, b"", b"defg", b"h" * 70000]
        conn.request("PUT", f"{u.path}?{u.query}", body=iter([x for x in parts if x]),
                     encode_chunked=True)
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        assert conn.sock is sock
        conn.close()
        got = moto.s3.get_object(Bucket=bucket, Key="chunked")["Body"].read()
        assert got == b"".join(parts), len(got)
        p.stop()
    print("ok: keep-alive (6 requests on one connection, Content-Length on each); "
          "a chunked request body arrives whole")


def check_slowdown(moto):
    with Proxy(moto, "--slowdown", "1.0") as p:
        s3 = p.client()
        s3.create_bucket(Bucket="slow")  # bucket creation is never faulted
        s3.head_bucket(Bucket="slow")
        put = lambda: s3.put_object(Bucket="slow", Key="k", Body=b"v")  # noqa: E731
        expect_client_error(put, 503, "SlowDown")
        assert not exists(moto.s3, "slow", "k"), "a SlowDown request reached moto"
        moto.s3.put_object(Bucket="slow", Key="there", Body=b"v")
        expect_client_error(lambda: s3.get_object(Bucket="slow", Key="there"), 503, "SlowDown")
        expect_client_error(lambda: s3.head_object(Bucket="slow", Key="there"), 503)
        expect_client_error(lambda: s3.list_objects_v2(Bucket="slow"), 503, "SlowDown")
        expect_client_error(lambda: s3.delete_object(Bucket="slow", Key="there"), 503, "SlowDown")
        assert exists(moto.s3, "slow", "there")
        p.stop()
        counts = p.stats()
        # create + head bucket, then 5 requests each answered SlowDown once (no retries).
        assert counts["requests"] == 7 and counts["slowdown"] == 5, counts
        assert counts["forwarded"] == 2, counts
    # --methods: only the listed methods get faults.
    with Proxy(moto, "--slowdown", "1.0", "--methods", "PUT") as p:
        s3 = p.client()
        assert s3.get_object(Bucket="slow", Key="there")["Body"].read() == b"v"
        expect_client_error(put, 503, "SlowDown")
        p.stop()
    print("ok: --slowdown 1.0: put/get/head/list/delete -> 503 SlowDown, nothing reaches moto; "
          "create/head bucket pass; --methods PUT leaves GET alone")


def check_lost(moto):
    with Proxy(moto, "--lost", "1.0") as p:
        s3 = p.client()
        s3.create_bucket(Bucket="lost")
        try:
            s3.put_object(Bucket="lost", Key="k", Body=b"written")
            raise AssertionError("a lost answer arrived")
        except CONNECTION_ERRORS as e:
            kind = type(e).__name__
        assert moto.s3.get_object(Bucket="lost", Key="k")["Body"].read() == b"written"
        # On the wire: no HTTP answer at all, a reset (or an EOF).
        url = s3.generate_presigned_url("put_object", Params={"Bucket": "lost", "Key": "raw"})
        u = urlsplit(url)
        with socket.create_connection(("127.0.0.1", p.port), timeout=10) as sock:
            sock.sendall(
                f"PUT {u.path}?{u.query} HTTP/1.1\r\nHost: 127.0.0.1:{p.port}\r\n"
                "Content-Length: 3\r\n\r\nraw".encode()
            )
            try:
                got = sock.recv(100)
                wire = "EOF" if got == b"" else None
                assert got == b"", f"got bytes: {got!r}"
            except ConnectionResetError:
                wire = "connection reset"
        assert exists(moto.s3, "lost", "raw")
        p.stop()
        counts = p.stats()
        assert counts["requests"] == 3 and counts["lost"] == 2 and counts["forwarded"] == 3, counts
    print(f"ok: --lost 1.0: boto3 raises {kind}, the wire sees {wire}; the object is in moto")


def check_after_500(moto):
    with Proxy(moto, "--after-500", "1.0") as p:
        s3 = p.client()
        s3.create_bucket(Bucket="after500")
        expect_client_error(
            lambda: s3.put_object(Bucket="after500", Key="k", Body=b"written"), 500, "InternalError"
        )
        assert moto.s3.get_object(Bucket="after500", Key="k")["Body"].read() == b"written"
        delete = lambda: s3.delete_object(Bucket="after500", Key="k")  # noqa: E731
        expect_client_error(delete, 500, "InternalError")
        assert not exists(moto.s3, "after500", "k"), "the delete was not forwarded"
        p.stop()
        counts = p.stats()
        assert counts["requests"] == 3 and counts["after_500"] == 2, counts
        assert counts["forwarded"] == 3, counts
    print("ok: --after-500 1.0: put -> 500 InternalError and the object is in moto; "
          "delete -> 500 and the object is gone")


def check_delay(moto):
    moto.s3.create_bucket(Bucket="delay")
    moto.s3.put_object(Bucket="delay", Key="k", Body=b"v")
    with Proxy(moto, "--delay-ms", "200") as p:
        s3 = p.client()
        s3.get_object(Bucket="delay", Key="k")["Body"].read()  # the connection is open
        times = []
        for _ in range(3):
            t = time.monotonic()
            assert s3.get_object(Bucket="delay", Key="k")["Body"].read() == b"v"
            times.append(time.monotonic() - t)
        assert min(times) >= 0.2, times
        p.stop(signal.SIGINT)
    counts = p.stats()
    assert counts["requests"] == 4 and counts["forwarded"] == 4, counts
    print(f"ok: --delay-ms 200: gets took {', '.join(f'{t * 1000:.0f}' for t in times)} ms; "
          f"SIGINT wrote the stats {counts}")


def check_concurrent(moto):
    flags = ["--slowdown", "0.05", "--lost", "0.02", "--after-500", "0.02", "--seed", "7"]
    with Proxy(moto, *flags) as p:
        s3 = p.client(retries={"max_attempts": 10, "mode": "standard"}, pool=64)
        s3.create_bucket(Bucket="busy")
        n = 200

        def put(i):
            s3.put_object(Bucket="busy", Key=f"k{i:04}", Body=f"value {i}".encode() * 100)

        def get(i):
            body = s3.get_object(Bucket="busy", Key=f"k{i:04}")["Body"].read()
            assert body == f"value {i}".encode() * 100, i

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            for fn in (put, get):
                futures = [pool.submit(fn, i) for i in range(n)]
                done, pending = concurrent.futures.wait(futures, timeout=120)
                assert not pending, f"{len(pending)} requests hung"
                for f in done:
                    f.result()
        elapsed = time.monotonic() - started
        listed = moto.s3.list_objects_v2(Bucket="busy", MaxKeys=1000)["KeyCount"]
        assert listed == n, listed
        time.sleep(1.2)
        running = p.stats()  # written every second
        assert running["requests"] >= 2 * n, running
        p.stop()
    counts = p.stats()
    assert counts["requests"] >= 2 * n + 1, counts
    assert counts["slowdown"] + counts["forwarded"] == counts["requests"], counts
    assert counts["upstream_errors"] == 0, counts
    for k in ("slowdown", "lost", "after_500"):
        assert counts[k] > 0, f"no {k} fault in {counts}"
    print(f"ok: {2 * n} concurrent requests (64 threads, boto3 standard retries) with "
          f"{' '.join(flags)}: all succeeded in {elapsed:.1f} s, nothing hung; stats {counts}")


def main():
    assert MOTO.exists(), f"{MOTO} is missing: run tests/support/tools.sh"
    global TMP
    TMP = tempfile.mkdtemp(prefix="faulty_s3_check.")
    moto = Moto()
    try:
        check_no_faults(moto)
        check_no_faults(moto, "--rewrite-host")
        check_raw_http(moto)
        check_slowdown(moto)
        check_lost(moto)
        check_after_500(moto)
        check_delay(moto)
        check_concurrent(moto)
    except AssertionError as e:
        import traceback

        traceback.print_exc()
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        moto.stop()
        shutil.rmtree(TMP, ignore_errors=True)
    print("all faulty_s3 checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
