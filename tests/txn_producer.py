#!/usr/bin/env python3
"""An independent producer of payment events for the transaction and compaction tests, written
with confluent-kafka (not sluice's code): transactions that commit or abort, interleaved with
plain (non-transactional) writes to the same partitions, optionally tombstones (null payloads).

Every event id it produced goes to --out as `ID STATE` a line: STATE is `committed` (a plain
write, or a transaction that committed), `aborted` (a transaction that aborted), `tombstone` (a
null payload; ID is its key) or `open` (written in a transaction still open when the producer
exits or is killed: the broker aborts it after its timeout). A line is written only after the
broker acknowledged the write (plain) or the commit/abort returned (transactional), except
`open` ones, written before the transaction's records are sent; a killed producer's unfinished
transaction is aborted by the broker.

  txn_producer.py --brokers B --topic T --partitions N --first-id I --count C
      [--txn-size K] [--abort-permille A] [--plain-permille P] [--tombstone-permille Z]
      [--seed S] [--rate EVENTS_PER_S] [--leave-open M] [--transactional-id ID]
      [--out FILE] [--only-partition P] [--marker-last]

SIGTERM ends it after the transaction under way. --leave-open M: after the rest, begin one more transaction of M events, flush it, print
`open` to stdout and sleep until killed (or --open-seconds). --marker-last ends with a committed
transaction on every partition, so each partition's last offset is a commit marker.
"""
import argparse
import json
import random
import signal
import sys
import time

from confluent_kafka import KafkaException, Producer

CURRENCIES = ["EUR", "USD", "GBP", "CHF", "SEK", "PLN"]
STATUSES = ["AUTHORIZED", "CAPTURED", "REFUNDED", "DECLINED"]
METHODS = ["card", "sepa_debit", "wallet", "bank_transfer"]
COUNTRIES = ["DE", "FR", "NL", "GB", "US", "SE", "PL", "CH"]
START_MS = 1_795_996_800_000  # 2026-12-01T00:00:00Z


def payload(rng, event_id, ts_ms):
    cents = 100 + rng.randrange(500_000)
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms / 1000)) + ".%03dZ" % (ts_ms % 1000)
    return json.dumps({
        "event_id": event_id,
        "payment_id": "pay_%016x" % rng.getrandbits(64),
        "merchant_id": "mer_%05d" % rng.randrange(20_000),
        "customer_id": "cus_%010d" % rng.randrange(10_000_000_000),
        "amount": "%d.%02d" % (cents // 100, cents % 100),
        "currency": rng.choice(CURRENCIES),
        "status": rng.choice(STATUSES),
        "method": rng.choice(METHODS),
        "country": rng.choice(COUNTRIES),
        "created_at": t,
    }, separators=(",", ":")).encode()


def produce_tx(tx, topic, key, value, partition):
    while True:
        try:
            tx.produce(topic, key=key, value=value, partition=partition)
            tx.poll(0)
            return
        except BufferError:
            tx.poll(0.05)


class Fenced(Exception):
    """The producer was fenced while its transaction was being aborted."""


def finish(tx, abort):
    """Commits (or aborts) the open transaction through broker faults: a retriable error is
    retried, one that requires an abort aborts. Returns whether it committed."""
    deadline = time.time() + 180
    while True:
        try:
            if abort:
                # Sent first, so the aborted records are in the log (abort alone would purge
                # what is still queued here): readers must skip them.
                tx.flush(30)
                tx.abort_transaction(30)
                return False
            tx.commit_transaction(30)
            return True
        except KafkaException as e:
            err = e.args[0]
            if err.fatal() and abort:
                # Fenced while aborting (the coordinator timed the transaction out across a
                # broker restart and bumped the epoch): it is aborted either way. The caller
                # replaces the producer.
                raise Fenced() from e
            if time.time() > deadline or err.fatal():
                raise
            if err.txn_requires_abort():
                abort = True
            elif not err.retriable():
                raise
            time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--first-id", type=int, default=0)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--txn-size", type=int, default=50)
    ap.add_argument("--abort-permille", type=int, default=300)
    ap.add_argument("--plain-permille", type=int, default=300)
    ap.add_argument("--tombstone-permille", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0, help="events/s (0: as fast as it goes)")
    ap.add_argument("--leave-open", type=int, default=0)
    ap.add_argument("--open-seconds", type=float, default=3600)
    ap.add_argument("--then-commit", action="store_true",
                    help="commit the open transaction after --open-seconds (not abort it)")
    ap.add_argument("--marker-last", action="store_true")
    ap.add_argument("--only-partition", type=int)
    ap.add_argument("--transactional-id")
    ap.add_argument("--prefix", default="evt")
    ap.add_argument("--out")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    out = open(a.out, "a", buffering=1) if a.out else sys.stderr
    txid = a.transactional_id or f"sluice-test-{a.topic}-{a.seed}"
    common = {"bootstrap.servers": a.brokers, "linger.ms": 5}
    def new_tx():
        p = Producer({**common, "transactional.id": txid, "transaction.timeout.ms": 10_000})
        p.init_transactions(30)
        return p

    tx = new_tx()
    plain = Producer({**common, "acks": "all", "enable.idempotence": True})
    errors = []

    def acked(err, msg):
        if err is not None:
            errors.append(str(err))

    def part(i):
        return a.only_partition if a.only_partition is not None else i % a.partitions

    counts = {"committed": 0, "aborted": 0, "tombstone": 0, "open": 0, "transactions": 0}
    next_id = a.first_id
    end = a.first_id + a.count
    started = time.time()

    def pace():
        if a.rate > 0:
            ahead = (next_id - a.first_id) / a.rate - (time.time() - started)
            if ahead > 0:
                time.sleep(ahead)

    def event(i):
        eid = f"{a.prefix}_{i:012d}"
        ts = START_MS + (i * 1000) % (6 * 3600 * 1000)
        return eid, payload(rng, eid, ts)

    # SIGTERM: finish the transaction under way, then stop (its ids are written).
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))

    while next_id < end and not stopping:
        pace()
        n = min(end - next_id, max(1, rng.randrange(1, 2 * a.txn_size)))
        if rng.randrange(1000) < a.plain_permille:
            ids = []
            for i in range(next_id, next_id + n):
                eid, body = event(i)
                if rng.randrange(1000) < a.tombstone_permille:
                    plain.produce(a.topic, key=eid, value=None, partition=part(i), on_delivery=acked)
                    ids.append((eid, "tombstone"))
                else:
                    plain.produce(a.topic, key=eid, value=body, partition=part(i), on_delivery=acked)
                    ids.append((eid, "committed"))
                plain.poll(0)
            plain.flush(60)
            if errors:
                sys.exit(f"plain produce failed: {errors[:3]}")
        else:
            abort = rng.randrange(1000) < a.abort_permille
            tx.begin_transaction()
            for i in range(next_id, next_id + n):
                eid, body = event(i)
                produce_tx(tx, a.topic, eid, body, part(i))
            try:
                committed = finish(tx, abort)
            except Fenced:
                print("txn_producer: fenced while aborting; a new producer takes over", file=sys.stderr)
                tx = new_tx()
                committed = False
            state = "committed" if committed else "aborted"
            ids = [(f"{a.prefix}_{i:012d}", state) for i in range(next_id, next_id + n)]
            counts["transactions"] += 1
        for eid, state in ids:
            out.write(f"{eid} {state}\n")
            counts[state] += 1
        next_id += n

    if a.marker_last:
        # One committed transaction per partition, last: every partition ends with a marker.
        tx.begin_transaction()
        ids = []
        for p in range(a.partitions):
            eid, body = event(next_id)
            produce_tx(tx, a.topic, eid, body, p if a.only_partition is None else a.only_partition)
            ids.append(eid)
            next_id += 1
        if not finish(tx, False):
            sys.exit("the last transaction could not commit")
        for eid in ids:
            out.write(f"{eid} committed\n")
            counts["committed"] += 1

    if a.leave_open:
        ids = [event(next_id + k) for k in range(a.leave_open)]
        for eid, _ in ids:
            out.write(f"{eid} open\n")
            counts["open"] += 1
        out.flush()
        tx.begin_transaction()
        for k, (eid, body) in enumerate(ids):
            produce_tx(tx, a.topic, eid, body, part(next_id + k))
        tx.flush(30)
        print(json.dumps({**counts, "next_id": next_id + a.leave_open, "state": "open"}), flush=True)
        time.sleep(a.open_seconds)
        if a.then_commit:
            tx.commit_transaction(30)
            print(json.dumps({"state": "committed"}), flush=True)
        else:
            tx.abort_transaction(30)
        return
    print(json.dumps({**counts, "next_id": next_id}), flush=True)


if __name__ == "__main__":
    main()
