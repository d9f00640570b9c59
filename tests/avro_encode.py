#!/usr/bin/env python3
"""Encodes test events as Avro with fastavro (an implementation independent of sluice's).

Reads JSON lines on stdin: {"partition": P, "schema": NAME, "record": {...}} (the record as the
JSON payload sluice would load), {"partition": P, "raw_hex": "..."} for a payload given as
is, or {"partition": P, "schema": NAME, "datum_hex": "..."} for NAME's Confluent frame (magic
byte, registered id) around datum bytes given as they are. Writes one line per input: "P HEX" with the encoded payload.

  --schema NAME=FILE     a writer schema (repeatable)
  --format raw           a bare Avro datum
  --format confluent     magic byte 0, the 4-byte big-endian id the registry gave, the datum;
                         each schema is registered first (POST {registry}/subjects/{subject}/versions,
                         with --auth USER:PASSWORD when the registry asks for it)
"""
import argparse
import base64
import io
import json
import struct
import sys
import ssl
import urllib.request
from decimal import Decimal

import fastavro


CONTEXT = None


def register(registry, subject, text, auth):
    headers = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    req = urllib.request.Request(
        f"{registry}/subjects/{subject}/versions",
        data=json.dumps({"schema": text}).encode(),
        headers=headers,
        method="POST")
    with urllib.request.urlopen(req, timeout=10, context=CONTEXT) as r:
        return json.load(r)["id"]


def conform(schema, record):
    """JSON values as fastavro wants them: decimals as Decimal; fields the writer lacks dropped."""
    out = {}
    for f in schema["fields"]:
        name = f["name"]
        if name not in record:
            continue
        v = record[name]
        t = f["type"]
        if isinstance(t, dict) and t.get("logicalType") == "decimal" and isinstance(v, str):
            v = Decimal(v)
        if t in ("int", "long") and isinstance(v, str):
            v = int(v)
        out[name] = v
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--schema", action="append", default=[])
    ap.add_argument("--format", choices=["raw", "confluent"], required=True)
    ap.add_argument("--registry")
    ap.add_argument("--subject", default="events-value")
    ap.add_argument("--auth", help="user:password for the registry (basic auth)")
    ap.add_argument("--cafile", help="CA certificate (PEM) of an https:// registry")
    a = ap.parse_args()
    global CONTEXT
    if a.cafile:
        CONTEXT = ssl.create_default_context(cafile=a.cafile)
    schemas = {}
    for spec in a.schema:
        name, path = spec.split("=", 1)
        text = open(path).read()
        raw = json.loads(text)
        parsed = fastavro.parse_schema(raw)
        sid = register(a.registry, a.subject, text, a.auth) if a.format == "confluent" else None
        schemas[name] = (raw, parsed, sid)
        if sid is not None:
            print(f"registered {name} as id {sid}", file=sys.stderr)
    out = sys.stdout
    for line in sys.stdin:
        m = json.loads(line)
        if "raw_hex" in m:
            out.write(f"{m['partition']} {m['raw_hex']}\n")
            continue
        raw, parsed, sid = schemas[m["schema"]]
        if "datum_hex" in m:
            frame = (b"\x00" + struct.pack(">I", sid)).hex()
            out.write(f"{m['partition']} {frame}{m['datum_hex']}\n")
            continue
        buf = io.BytesIO()
        if a.format == "confluent":
            buf.write(b"\x00" + struct.pack(">I", sid))
        fastavro.schemaless_writer(buf, parsed, conform(raw, m["record"]))
        out.write(f"{m['partition']} {buf.getvalue().hex()}\n")


if __name__ == "__main__":
    main()
