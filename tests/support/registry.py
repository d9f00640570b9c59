#!/usr/bin/env python3
"""TEST STAND-IN for a Confluent Schema Registry: in memory, Python stdlib only.

Not the real thing. A real registry (Apicurio Registry's /apis/ccompat/v7, or Confluent's) needs
artifacts from Maven Central, which the machines of this project's kind cannot reach; this serves
the subset of the Confluent REST API that the loader and the tests use, with Confluent's shapes:

  GET    /subjects                               -> ["s1", ...]
  POST   /subjects/{s}/versions  {"schema": "..", "schemaType"?: "AVRO"|"JSON"|"PROTOBUF"}
                                                 -> {"id": N}
  POST   /subjects/{s}           {"schema": ".."} (lookup) -> {"subject", "version", "id", "schema"}
  GET    /subjects/{s}/versions                  -> [1, 2, ...]
  GET    /subjects/{s}/versions/{v|latest}       -> {"subject", "version", "id", "schema"}
  DELETE /subjects/{s}                           -> [versions]   (ids stay resolvable, as in Confluent)
  GET    /schemas/ids/{id}                       -> {"schema": ".."} (+ "schemaType" when not AVRO)
  GET    /schemas/ids/{id}/versions              -> [{"subject", "version"}, ...]
  GET    /schemas/types                          -> ["AVRO", "JSON", "PROTOBUF"]
  GET|PUT /config, /config/{s}                   -> compatibility is stored and echoed, never enforced

Ids are global and stable per distinct schema text (the text exactly as registered, not
canonicalised): the same text under two subjects gets one id; a new text gets the next id.
Errors are JSON {"error_code": N, "message": ".."}: 40401 subject not found, 40402 version not
found, 40403 schema not found (all HTTP 404), 42201 invalid schema (HTTP 422), 401 unauthorised.
The same routes are also served under the prefix /apis/ccompat/v7 (Apicurio's path). Query
strings (?normalize=, ?subject=, ...) are accepted and ignored.

  registry.py [--port 0] [--port-file FILE] [--first-id 1] [--basic-auth USER:PASS]

--port 0 binds a free loopback port; --port-file receives the bound port once it is listening.
"""
import argparse
import base64
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
PREFIX = "/apis/ccompat/v7"
TYPES = ("AVRO", "JSON", "PROTOBUF")


class ApiError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Registry:
    def __init__(self, first_id):
        self.lock = threading.Lock()
        self.next_id = first_id
        self.by_id = {}  # id -> {"schema", "schemaType", "references"}
        self.id_of = {}  # (schemaType, text) -> id
        self.subjects = {}  # subject -> list of ids, index = version - 1
        self.config = {None: "BACKWARD"}

    def _versions(self, subject):
        if subject not in self.subjects:
            raise ApiError(404, 40401, f"Subject '{subject}' not found.")
        return self.subjects[subject]

    def _version_body(self, subject, version, sid):
        body = {"subject": subject, "version": version, "id": sid}
        body.update(self._schema_body(sid))
        return body

    def _schema_body(self, sid):
        entry = self.by_id[sid]
        body = {"schema": entry["schema"]}
        if entry["schemaType"] != "AVRO":
            body["schemaType"] = entry["schemaType"]
        if entry["references"]:
            body["references"] = entry["references"]
        return body

    @staticmethod
    def _parse(request):
        if not isinstance(request, dict) or not isinstance(request.get("schema"), str):
            raise ApiError(422, 42201, "Invalid schema: the body needs a 'schema' string")
        kind = request.get("schemaType") or "AVRO"
        if kind not in TYPES:
            raise ApiError(422, 42201, f"Invalid schema: unknown schemaType {kind}")
        text = request["schema"]
        if kind in ("AVRO", "JSON"):
            try:
                json.loads(text)
            except ValueError as e:
                raise ApiError(422, 42201, f"Invalid schema: {e}")
        return kind, text, request.get("references") or []

    def register(self, subject, request):
        kind, text, refs = self._parse(request)
        with self.lock:
            sid = self.id_of.get((kind, text))
            if sid is None:
                sid = self.next_id
                self.next_id += 1
                self.id_of[(kind, text)] = sid
                self.by_id[sid] = {"schema": text, "schemaType": kind, "references": refs}
            versions = self.subjects.setdefault(subject, [])
            if sid not in versions:
                versions.append(sid)
            return {"id": sid}

    def lookup(self, subject, request):
        kind, text, _ = self._parse(request)
        with self.lock:
            versions = self._versions(subject)
            sid = self.id_of.get((kind, text))
            if sid is None or sid not in versions:
                raise ApiError(404, 40403, "Schema not found")
            return self._version_body(subject, versions.index(sid) + 1, sid)

    def version(self, subject, version):
        with self.lock:
            versions = self._versions(subject)
            if version == "latest" or version == "-1":
                n = len(versions)
            elif version.isdigit() and 1 <= int(version) <= len(versions):
                n = int(version)
            else:
                raise ApiError(404, 40402, f"Version {version} not found.")
            return self._version_body(subject, n, versions[n - 1])

    def schema(self, sid):
        with self.lock:
            if sid not in self.by_id:
                raise ApiError(404, 40403, f"Schema {sid} not found")
            return self._schema_body(sid)

    def schema_versions(self, sid):
        with self.lock:
            if sid not in self.by_id:
                raise ApiError(404, 40403, f"Schema {sid} not found")
            return [
                {"subject": s, "version": v.index(sid) + 1}
                for s, v in sorted(self.subjects.items())
                if sid in v
            ]

    def delete_subject(self, subject):
        with self.lock:
            versions = self._versions(subject)
            del self.subjects[subject]
            return list(range(1, len(versions) + 1))


def route(reg, method, path, body):
    """Returns (status, json body) or raises ApiError."""
    if path.startswith(PREFIX + "/") or path == PREFIX:
        path = path[len(PREFIX):]
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    match = (method, len(parts), parts[0] if parts else "")
    if match == ("GET", 1, "subjects"):
        with reg.lock:
            return 200, sorted(reg.subjects)
    if match == ("GET", 2, "schemas") and parts[1] == "types":
        return 200, list(TYPES)
    if parts[:2] == ["schemas", "ids"] and method == "GET" and len(parts) in (3, 4):
        if not re.fullmatch(r"-?\d+", parts[2]):
            raise ApiError(404, 40403, f"Schema {parts[2]} not found")
        sid = int(parts[2])
        if len(parts) == 3:
            return 200, reg.schema(sid)
        if parts[3] == "versions":
            return 200, reg.schema_versions(sid)
    if parts and parts[0] == "subjects" and len(parts) >= 2:
        subject = parts[1]
        if len(parts) == 2 and method == "POST":
            return 200, reg.lookup(subject, body)
        if len(parts) == 2 and method == "DELETE":
            return 200, reg.delete_subject(subject)
        if len(parts) == 3 and parts[2] == "versions":
            if method == "POST":
                return 200, reg.register(subject, body)
            if method == "GET":
                with reg.lock:
                    return 200, list(range(1, len(reg._versions(subject)) + 1))
        if len(parts) == 4 and parts[2] == "versions" and method == "GET":
            return 200, reg.version(subject, parts[3])
    if parts and parts[0] == "config" and len(parts) <= 2:
        subject = parts[1] if len(parts) == 2 else None
        if method == "GET":
            with reg.lock:
                level = reg.config.get(subject)
            if level is None:
                raise ApiError(404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured")
            return 200, {"compatibilityLevel": level}
        if method == "PUT":
            level = body.get("compatibility") if isinstance(body, dict) else None
            if not isinstance(level, str):
                raise ApiError(422, 42203, "Invalid compatibility level")
            with reg.lock:
                reg.config[subject] = level.upper()
            return 200, {"compatibility": level.upper()}
    raise ApiError(404, 404, "HTTP 404 Not Found")


def handler_for(reg, auth):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "sluice-test-registry/1"

        def _body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    data += self.rfile.read(size)
                    self.rfile.readline()
            else:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not data.strip():
                return None
            try:
                return json.loads(data)
            except ValueError as e:
                raise ApiError(422, 422, f"Unrecognized JSON body: {e}")

        def _send(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _handle(self):
            try:
                body = self._body()
                if auth is not None and self.headers.get("Authorization") != auth:
                    raise ApiError(401, 401, "Unauthorized")
                status, payload = route(reg, self.command, urlsplit(self.path).path, body)
            except ApiError as e:
                status, payload = e.status, {"error_code": e.code, "message": e.message}
            except Exception as e:  # a bug in the stand-in: say so, as a registry would
                status, payload = 500, {"error_code": 50001, "message": f"{type(e).__name__}: {e}"}
            self._send(status, payload)

        do_GET = do_POST = do_PUT = do_DELETE = _handle

        def log_message(self, fmt, *args):
            sys.stderr.write("registry: %s\n" % (fmt % args))
            sys.stderr.flush()

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--first-id", type=int, default=1)
    p.add_argument("--basic-auth", metavar="USER:PASS")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    p.add_argument("--tls-key", help="... and this private key (PEM)")
    a = p.parse_args()
    auth = None
    if a.basic_auth:
        auth = "Basic " + base64.b64encode(a.basic_auth.encode()).decode()
    server = ThreadingHTTPServer((a.host, a.port), handler_for(Registry(a.first_id), auth))
    server.daemon_threads = True
    scheme = "http"
    if a.tls_cert:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    port = server.server_address[1]
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, a.port_file)
    sys.stderr.write(f"registry: test stand-in listening on {scheme}://{a.host}:{port}\n")
    sys.stderr.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
