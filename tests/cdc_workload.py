#!/usr/bin/env python3
"""A PostgreSQL workload for the change data capture tests (run it with .tools/venv/bin/python).

    cdc_workload.py setup --url URL [--rows N] [--seed K]
        creates the tables accounts, payments and no_pk (REPLICA IDENTITY DEFAULT) and fills them
        with N accounts (default 50), 2N payments and N/5 no_pk rows, for a snapshot to read.
    cdc_workload.py run --url URL (--seconds S | --ops M) [--connections N] [--seed K] [--out FILE]
        N threads, one connection each, doing a seeded random mix of inserts, updates (some that
        leave a TOASTed `note` untouched, some that change the primary key), deletes,
        multi-statement transactions and rolled-back transactions; once, half-way,
        `ALTER TABLE accounts ADD COLUMN tier text DEFAULT 'basic'`. Each thread works on rows of
        its own (ids of its own range), so the choices are a function of the seed and N, and
        with --ops (M operations per thread) so is the end state; with --seconds only the number
        of operations depends on timing. Writes one JSON line of counts to FILE (and stdout).
    cdc_workload.py dump --url URL --table T
        prints every row of T as canonical JSON lines (keys sorted), sorted by primary key (a
        table without one: by all columns): numerics as strings with their scale (PostgreSQL's
        own text), timestamptz as ISO UTC with microseconds ("2024-01-01T00:00:00.000000Z"),
        dates as ISO, jsonb as its JSON text (PostgreSQL's, as Debezium sends it), char(n)
        padded.

Events Debezium makes of the counts `run` reports, per table: op c = inserts + pk_updates;
op u = updates; op d = deletes + pk_updates, each followed by a tombstone (null value).
"""

import argparse
import base64
import datetime as dt
import json
import random
import sys
import threading
import time
import signal
from decimal import Context, Decimal

import psycopg2

SETUP_SQL = """
create table accounts (
    id bigserial primary key,
    name text,
    balance numeric(12,2),
    status text,
    note text,
    meta jsonb,
    updated_at timestamptz,
    born date
);
create table payments (
    id bigserial primary key,
    account_id bigint,
    amount numeric,
    currency char(3),
    created_at timestamptz,
    big numeric(50,10)
);
create table no_pk (
    a bigint,
    b text,
    c numeric(10,3)
);
"""

# Rows of a thread have ids in [ID_BASE * (t + 1), ID_BASE * (t + 2)); setup's rows come from
# the sequences (1, 2, ...) and belong to thread id % N.
ID_BASE = 1_000_000_000
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
STATUSES = ["active", "frozen", "closed", "pending"]
CURRENCIES = ["USD", "EUR", "JPY", "CHF", "X"]  # "X" is stored padded: "X  "
TIERS = ["gold", "silver", None]
BIG_NOTE = 6000  # bytes of random data: ~8 KB of base64, TOASTed out of line even compressed
EXACT = Context(prec=200)  # Decimal's default context would round to 28 digits


def dec(n, scale):
    """The exact decimal n * 10**-scale (digits and scale kept)."""
    return Decimal(n).scaleb(-scale, EXACT)


# --- values, drawn from a random.Random ---------------------------------------------------------

def big_note(rng):
    return base64.b64encode(rng.getrandbits(8 * BIG_NOTE).to_bytes(BIG_NOTE, "little")).decode()


def small_note(rng):
    return rng.choice(["", "short note", "ünïcödé ✓", "line\nbreak", None])


def balance(rng):
    return dec(rng.randint(-10**10 + 1, 10**10 - 1), 2)  # numeric(12,2)


def amount(rng):
    # unconstrained numeric: scales 0..9, and now and then a big or tiny one
    r = rng.random()
    if r < 0.05:
        return dec(rng.randint(1, 10**30), rng.randint(0, 20))
    if r < 0.1:
        return dec(rng.randint(1, 999), rng.randint(10, 18))
    return dec(rng.randint(-10**9, 10**9), rng.randint(0, 9))


def big(rng):
    return dec(rng.randint(-10**50 + 1, 10**50 - 1), 10)  # numeric(50,10)


def moment(rng):
    # timestamptz with microseconds, 2024..2026, some before the epoch of the fixed base too
    return EPOCH + dt.timedelta(seconds=rng.randint(-86400 * 365, 86400 * 730),
                                microseconds=rng.randint(0, 999_999))


def born(rng):
    return dt.date(1930, 1, 1) + dt.timedelta(days=rng.randint(0, 365 * 90))  # before 1970 too


def meta(rng):
    m = {"k": rng.randint(0, 10**6), "tags": rng.sample(["a", "b", "c", "d", "é"], rng.randint(0, 3))}
    if rng.random() < 0.5:
        m["nested"] = {"flag": rng.random() < 0.5, "n": None, "s": "x" * rng.randint(0, 5)}
    return json.dumps(m)


def account_values(rng):
    note = big_note(rng) if rng.random() < 0.4 else small_note(rng)
    return {
        "name": f"acct-{rng.randint(0, 10**6)}",
        "balance": balance(rng),
        "status": rng.choice(STATUSES),
        "note": note,
        "meta": meta(rng),
        "updated_at": moment(rng),
        "born": born(rng),
    }


def payment_values(rng, account_id):
    return {
        "account_id": account_id,
        "amount": amount(rng),
        "currency": rng.choice(CURRENCIES),
        "created_at": moment(rng),
        "big": big(rng),
    }


def insert(cur, table, values, returning=True):
    cols = list(values)
    sql = f"insert into {table} ({', '.join(cols)}) values ({', '.join(['%s'] * len(cols))})"
    if returning:
        sql += " returning id"
    cur.execute(sql, [values[c] for c in cols])
    return cur.fetchone()[0] if returning else None


# --- setup ----------------------------------------------------------------------------------------

def setup(args):
    conn = psycopg2.connect(args.url)
    rng = random.Random(f"setup-{args.seed}")
    with conn, conn.cursor() as cur:
        cur.execute(SETUP_SQL)
        ids = []
        for _ in range(args.rows):
            ids.append(insert(cur, "accounts", account_values(rng)))
        for _ in range(2 * args.rows):
            insert(cur, "payments", payment_values(rng, rng.choice(ids)))
        for i in range(args.rows // 5):
            insert(cur, "no_pk", {"a": i % 3, "b": rng.choice(["x", "y", None]),
                                  "c": dec(rng.randint(0, 10**7), 3)}, returning=False)
    conn.close()
    print(json.dumps({"accounts": args.rows, "payments": 2 * args.rows, "no_pk": args.rows // 5}))


# --- run ------------------------------------------------------------------------------------------

class Shared:
    def __init__(self):
        self.lock = threading.Lock()
        self.altered = threading.Event()
        self.counts = {}

    def add(self, counts):
        with self.lock:
            for k, v in counts.items():
                self.counts[k] = self.counts.get(k, 0) + v


class Worker:
    """One connection; the rows it owns: accounts {id: has_big_note}, payments [id]."""

    def __init__(self, t, args, shared, accounts, payments):
        self.t, self.args, self.shared = t, args, shared
        self.rng = random.Random(f"run-{args.seed}-{t}-{args.connections}")
        self.next_id = ID_BASE * (t + 1)
        self.accounts = accounts  # {id: big note?}, insertion-ordered
        self.payments = payments  # [id]
        self.counts = {}
        self.conn = psycopg2.connect(args.url)

    def count(self, key, n=1):
        self.counts[key] = self.counts.get(key, 0) + n

    def new_id(self):
        self.next_id += 1
        return self.next_id

    def pick(self, seq):
        seq = list(seq)
        return seq[self.rng.randrange(len(seq))] if seq else None

    # Each op: its draws first (never depending on timing), then its statements. Returns the
    # counts it would add once committed.
    def op_insert_account(self, cur, c):
        i, v = self.new_id(), account_values(self.rng)
        tier = self.rng.choice(TIERS)
        # Only the thread that altered the table sets tier (after its ALTER), so that with --ops
        # the end state does not depend on when the other threads saw the new column.
        if self.t == 0 and self.shared.altered.is_set() and tier is not None:
            v["tier"] = tier
        insert(cur, "accounts", {"id": i, **v})
        c["accounts_insert"] = c.get("accounts_insert", 0) + 1
        return lambda: self.accounts.__setitem__(i, len(v["note"] or "") > 2000)

    def op_insert_payment(self, cur, c):
        i = self.new_id()
        v = payment_values(self.rng, self.pick(self.accounts) or 0)
        insert(cur, "payments", {"id": i, **v})
        c["payments_insert"] = c.get("payments_insert", 0) + 1
        return lambda: self.payments.append(i)

    def op_update_small(self, cur, c):
        # balance/status/updated_at only: a TOASTed note is not in the WAL record
        a = self.pick(self.accounts)
        b, s, m = balance(self.rng), self.rng.choice(STATUSES), moment(self.rng)
        if a is None:
            return None
        cur.execute("update accounts set balance = %s, status = %s, updated_at = %s where id = %s",
                    (b, s, m, a))
        c["accounts_update"] = c.get("accounts_update", 0) + 1
        if self.accounts[a]:
            c["accounts_update_toast_untouched"] = c.get("accounts_update_toast_untouched", 0) + 1
        return None

    def op_update_note(self, cur, c):
        a = self.pick(self.accounts)
        note = big_note(self.rng) if self.rng.random() < 0.5 else small_note(self.rng)
        mt = meta(self.rng)
        if a is None:
            return None
        cur.execute("update accounts set note = %s, meta = %s where id = %s", (note, mt, a))
        c["accounts_update"] = c.get("accounts_update", 0) + 1
        return lambda: self.accounts.__setitem__(a, len(note or "") > 2000)

    def op_update_payment(self, cur, c):
        p = self.pick(self.payments)
        am, bg = amount(self.rng), big(self.rng)
        if p is None:
            return None
        cur.execute("update payments set amount = %s, big = %s where id = %s", (am, bg, p))
        c["payments_update"] = c.get("payments_update", 0) + 1
        return None

    def op_pk_update_account(self, cur, c):
        a, n = self.pick(self.accounts), self.new_id()
        if a is None:
            return None
        cur.execute("update accounts set id = %s where id = %s", (n, a))
        c["accounts_pk_update"] = c.get("accounts_pk_update", 0) + 1

        def apply():
            self.accounts[n] = self.accounts.pop(a)
        return apply

    def op_pk_update_payment(self, cur, c):
        p, n = self.pick(self.payments), self.new_id()
        if p is None:
            return None
        cur.execute("update payments set id = %s where id = %s", (n, p))
        c["payments_pk_update"] = c.get("payments_pk_update", 0) + 1
        return lambda: self.payments.__setitem__(self.payments.index(p), n)

    def op_delete_account(self, cur, c):
        a = self.pick(self.accounts)
        if a is None:
            return None
        cur.execute("delete from accounts where id = %s", (a,))
        c["accounts_delete"] = c.get("accounts_delete", 0) + 1
        return lambda: self.accounts.pop(a)

    def op_delete_payment(self, cur, c):
        p = self.pick(self.payments)
        if p is None:
            return None
        cur.execute("delete from payments where id = %s", (p,))
        c["payments_delete"] = c.get("payments_delete", 0) + 1
        return lambda: self.payments.remove(p)

    def op_insert_no_pk(self, cur, c):
        v = {"a": self.rng.randint(0, 5), "b": self.rng.choice(["x", "y", None]),
             "c": dec(self.rng.randint(0, 10**7), 3)}
        insert(cur, "no_pk", v, returning=False)
        c["no_pk_insert"] = c.get("no_pk_insert", 0) + 1
        return None

    SINGLE = [
        (25, "op_insert_account"), (20, "op_insert_payment"), (20, "op_update_small"),
        (5, "op_update_note"), (5, "op_update_payment"), (4, "op_pk_update_account"),
        (1, "op_pk_update_payment"), (6, "op_delete_account"), (4, "op_delete_payment"),
        (3, "op_insert_no_pk"),
    ]

    def choose(self):
        r = self.rng.randrange(sum(w for w, _ in self.SINGLE))
        for w, name in self.SINGLE:
            if r < w:
                return getattr(self, name)
            r -= w

    def step(self):
        """One transaction: mostly one statement; 5% several (2-5 ops), 2% rolled back."""
        kind = self.rng.random()
        ops = [self.choose()] if kind < 0.93 else [self.choose() for _ in range(self.rng.randint(2, 5))]
        rollback = kind >= 0.98
        c, applies = {}, []
        with self.conn.cursor() as cur:
            for op in ops:
                a = op(cur, c)
                if a is not None:
                    applies.append(a)
                    a()  # later ops of the transaction see its effect
        if rollback:
            self.conn.rollback()
            self.count("rolled_back_transactions")
            # undo the bookkeeping: simplest is to rebuild it from the owned ranges
            self.reload()
            return
        self.conn.commit()
        for k, v in c.items():
            self.count(k, v)
        self.count("transactions")
        if len(ops) > 1:
            self.count("multi_statement_transactions")

    def reload(self):
        lo, hi = ID_BASE * (self.t + 1), ID_BASE * (self.t + 2)
        n = self.args.connections
        with self.conn.cursor() as cur:
            cur.execute("select id, coalesce(length(note), 0) > 2000 from accounts "
                        "where (id >= %s and id < %s) or (id < %s and id %% %s = %s) order by id",
                        (lo, hi, ID_BASE, n, self.t))
            self.accounts = dict(cur.fetchall())
            cur.execute("select id from payments where (id >= %s and id < %s) or "
                        "(id < %s and id %% %s = %s) order by id", (lo, hi, ID_BASE, n, self.t))
            self.payments = [r[0] for r in cur.fetchall()]
            # a later run goes on after the ids an earlier one used (ids of deleted rows above
            # the highest live one are used again: a key coming back after its delete)
            cur.execute("select greatest((select max(id) from accounts where id >= %s and id < %s),"
                        " (select max(id) from payments where id >= %s and id < %s))", (lo, hi, lo, hi))
            self.next_id = max(self.next_id, cur.fetchone()[0] or lo)
        self.conn.rollback()

    def alter(self):
        with self.conn.cursor() as cur:
            cur.execute("alter table accounts add column tier text default 'basic'")
        self.conn.commit()
        self.shared.altered.set()
        self.count("alter_add_column", 1)

    def no_pk_update(self):
        """Once: an UPDATE of no_pk, which PostgreSQL refuses while the table is in a publication
        that publishes updates (it has no replica identity)."""
        try:
            with self.conn.cursor() as cur:
                cur.execute("update no_pk set b = 'updated' where a = 0")
                n = cur.rowcount
            self.conn.commit()
            self.count("no_pk_update_rows", n)
        except psycopg2.Error as e:
            self.conn.rollback()
            self.count("no_pk_update_refused")
            self.counts.setdefault("no_pk_update_error", str(e).splitlines()[0])

    def run(self, deadline, half_time):
        self.reload()
        done = 0
        try:
            while True:
                if self.args.ops is not None:
                    if done >= self.args.ops:
                        break
                    half = done == self.args.ops // 2
                else:
                    if time.monotonic() >= deadline:
                        break
                    half = not self.shared.altered.is_set() and time.monotonic() >= half_time
                if self.t == 0 and half and not self.shared.altered.is_set():
                    self.alter()
                    self.no_pk_update()
                self.step()
                done += 1
        finally:
            self.counts["ops"] = done
            self.shared.add({k: v for k, v in self.counts.items() if isinstance(v, int)})
            for k, v in self.counts.items():
                if isinstance(v, str):
                    self.shared.counts[k] = v
            self.conn.close()


def run(args):
    shared = Shared()
    conn = psycopg2.connect(args.url)
    with conn.cursor() as cur:
        cur.execute("select exists (select 1 from information_schema.columns "
                    "where table_name = 'accounts' and column_name = 'tier')")
        if cur.fetchone()[0]:
            shared.altered.set()  # a second run: the column is there already
    conn.close()
    workers = [Worker(t, args, shared, {}, []) for t in range(args.connections)]
    start = time.monotonic()
    seconds = args.seconds if args.seconds is not None else 0
    deadline, half = start + seconds, start + seconds / 2
    errors = []

    def target(w):
        try:
            w.run(deadline, half)
        except Exception as e:  # reported, and the exit status says so
            errors.append(f"thread {w.t}: {e!r}")

    threads = [threading.Thread(target=target, args=(w,)) for w in workers]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - start
    summary = dict(sorted(shared.counts.items()))
    summary["seconds"] = round(elapsed, 3)
    summary["errors"] = errors
    line = json.dumps(summary, sort_keys=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line + "\n")
    print(line)
    if errors:
        sys.exit(1)


# --- dump -----------------------------------------------------------------------------------------

def dump(args):
    conn = psycopg2.connect(args.url)
    with conn.cursor() as cur:
        cur.execute("""select a.attname, format_type(a.atttypid, a.atttypmod), t.typname
                       from pg_attribute a join pg_type t on t.oid = a.atttypid
                       where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped
                       order by a.attnum""", (args.table,))
        cols = cur.fetchall()
        cur.execute("""select a.attname from pg_index i
                       join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
                       where i.indrelid = %s::regclass and i.indisprimary
                       order by array_position(i.indkey::int2[], a.attnum)""", (args.table,))
        pk = [r[0] for r in cur.fetchall()]
        exprs = []
        for name, _fmt, typ in cols:
            q = '"' + name.replace('"', '""') + '"'
            if typ in ("numeric", "jsonb", "json", "uuid", "interval", "money"):
                exprs.append(f"{q}::text")
            elif typ == "timestamptz":
                exprs.append(f"""to_char({q} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')""")
            elif typ == "timestamp":
                exprs.append(f"""to_char({q}, 'YYYY-MM-DD"T"HH24:MI:SS.US')""")
            elif typ == "date":
                exprs.append(f"to_char({q}, 'YYYY-MM-DD')")
            else:
                exprs.append(q)
        order = ", ".join(f'"{c}"' for c in pk) if pk else ", ".join(f"{e}" for e in exprs) or "1"
        cur.execute(f"select {', '.join(exprs)} from {args.table} order by {order}")
        names = [c[0] for c in cols]
        out = sys.stdout
        for row in cur:
            out.write(json.dumps(dict(zip(names, row)), sort_keys=True, ensure_ascii=False,
                                 separators=(",", ":")) + "\n")
    conn.close()


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `dump ... | head` ends quietly
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--url", required=True)
    s.add_argument("--rows", type=int, default=50)
    s.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run")
    r.add_argument("--url", required=True)
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument("--seconds", type=float)
    g.add_argument("--ops", type=int, help="operations (transactions) per connection")
    r.add_argument("--connections", type=int, default=3)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out")
    d = sub.add_parser("dump")
    d.add_argument("--url", required=True)
    d.add_argument("--table", required=True)
    args = p.parse_args()
    {"setup": setup, "run": run, "dump": dump}[args.cmd](args)


if __name__ == "__main__":
    main()
