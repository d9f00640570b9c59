#!/usr/bin/env python3
"""Produces test topics for `sluice init`, independently of sluice (confluent-kafka, fastavro).

    init_producer.py --brokers B --topic T --shape {payments,sensor,nested} --count N
                     [--bad K] [--partitions P] [--confluent --registry URL] [--seed S]

JSON shapes (one JSON object per record):
  payments  the bench's payment events: ten strings, one an RFC 3339 time
  sensor    the bench's second shape (benches/shapes/sensor.avsc): integers, doubles, a nullable
            double, a boolean, a nullable nested record, an array, epoch-millisecond times
  nested    orders: nested records two deep, a nullable one, arrays of records, arrays that are
            sometimes empty, optional fields, numbers that are integers in some records and
            fractions in others, a map of attributes keyed by data
--bad K writes K more records that are not JSON at all, spread over the run.
--confluent writes the sensor shape as Confluent Avro instead: the schema registered under
subject T-value, each payload magic byte 0, the 4-byte id, the fastavro datum.
Prints {"produced": N + K, "valid": N, "bad": K, "id": the registered id or null} on stdout,
every record acknowledged.
"""
import argparse
import io
import json
import random
import struct
import sys
import time
import urllib.request

from confluent_kafka import Producer

MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def payment(i, r, now_ms):
    t = now_ms - r.randint(0, 3_600_000)
    return {
        "event_id": f"evt-{i:09d}",
        "payment_id": f"pay-{r.randrange(10**8):08d}",
        "merchant_id": f"m-{r.randrange(500)}",
        "customer_id": f"c-{r.randrange(10**6)}",
        "amount": f"{r.randrange(1, 100000) / 100:.2f}",
        "currency": r.choice(["EUR", "USD", "GBP"]),
        "status": r.choice(["authorized", "captured", "refunded"]),
        "method": r.choice(["card", "sepa", "wallet"]),
        "country": r.choice(["DE", "FR", "NL", "US"]),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t / 1000))
        + f".{t % 1000:03d}Z",
    }


def sensor(i, r, now_ms):
    return {
        "reading_id": f"r-{i}",
        "device_id": r.randrange(10**9),
        "seq": i,
        "temperature": round(r.uniform(-20, 40), 3),
        "humidity": None if r.random() < 0.1 else round(r.uniform(0, 100), 2),
        "battery": round(r.uniform(0, 1), 2),
        "ok": r.random() < 0.95,
        "firmware": None if r.random() < 0.2 else {"version": f"1.{r.randrange(9)}", "build": r.randrange(999)},
        "tags": [r.choice(["roof", "cellar", "lab"]) for _ in range(r.randrange(0, 3))] or ["none"],
        "measured_at": now_ms - r.randint(0, 600_000),
    }


def order(i, r, now_ms):
    o = {
        "order_id": f"o-{i}",
        "placed_at": now_ms - r.randint(0, 900_000),
        "customer": {
            "id": r.randrange(10**6),
            "address": None if r.random() < 0.15 else {"city": r.choice(["Berlin", "Lyon"]), "zip": f"{r.randrange(10**5):05d}"},
        },
        "lines": [
            {"sku": f"sku-{r.randrange(1000)}", "qty": r.randrange(1, 5), "price": r.choice([10, 12.5, 99.99])}
            for _ in range(r.randrange(1, 4))
        ],
        "notes": [] if r.random() < 0.7 else ["gift"],
        "total": r.choice([20, 35.5, 100]),
        "paid": r.random() < 0.8,
        "attrs": {f"a{r.randrange(200)}": r.randrange(10) for _ in range(r.randrange(0, 3))},
    }
    if r.random() < 0.3:
        o["customer"]["email"] = f"c{i}@example.com"
    if r.random() < 0.1:
        o["coupon"] = "WINTER"
    return o


SENSOR_AVSC = {
    "type": "record", "name": "reading", "namespace": "com.example.sensors",
    "fields": [
        {"name": "reading_id", "type": "string"},
        {"name": "device_id", "type": "long"},
        {"name": "seq", "type": "int"},
        {"name": "temperature", "type": "double"},
        {"name": "humidity", "type": ["null", "double"], "default": None},
        {"name": "battery", "type": "float"},
        {"name": "ok", "type": "boolean"},
        {"name": "firmware", "type": ["null", {"type": "record", "name": "fw", "fields": [
            {"name": "version", "type": "string"}, {"name": "build", "type": "int"}]}], "default": None},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "measured_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}


def register(registry, subject, schema):
    req = urllib.request.Request(
        f"{registry}/subjects/{subject}/versions",
        data=json.dumps({"schema": json.dumps(schema)}).encode(),
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)["id"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--shape", choices=["payments", "sensor", "nested"], required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--bad", type=int, default=0)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--confluent", action="store_true")
    ap.add_argument("--registry")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    r = random.Random(a.seed)
    now_ms = int(time.time() * 1000)
    make = {"payments": payment, "sensor": sensor, "nested": order}[a.shape]
    encode = lambda rec: json.dumps(rec).encode()
    sid = None
    if a.confluent:
        import fastavro
        parsed = fastavro.parse_schema(SENSOR_AVSC)
        sid = register(a.registry, f"{a.topic}-value", SENSOR_AVSC)

        def encode(rec):
            buf = io.BytesIO()
            buf.write(struct.pack(">bI", 0, sid))
            fastavro.schemaless_writer(buf, parsed, rec)
            return buf.getvalue()

    p = Producer({"bootstrap.servers": a.brokers, "acks": "all", "linger.ms": 20})
    failed = []
    bad_at = set(r.sample(range(a.count + a.bad), a.bad))
    n = 0
    for k in range(a.count + a.bad):
        if k in bad_at:
            body = b"<html>502 Bad Gateway</html>" if k % 2 else b"\x7f\x00garbage"
        else:
            body = encode(make(n, r, now_ms))
            n += 1
        while True:
            try:
                p.produce(a.topic, body, partition=k % a.partitions,
                          on_delivery=lambda err, msg: err and failed.append(str(err)))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(60)
    if left or failed:
        sys.exit(f"init_producer: {left} unflushed, {len(failed)} failed: {failed[:3]}")
    print(json.dumps({"produced": a.count + a.bad, "valid": a.count, "bad": a.bad, "id": sid}))


if __name__ == "__main__":
    main()
