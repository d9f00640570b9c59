#!/usr/bin/env bash
# The demo: payment events into an hourly Parquet table, loaded once, then inspected.
# Runs under with-broker.sh, which starts a local broker and sets SLUICE_BROKERS.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
sluice=${SLUICE:-target/debug/sluice}
py=.tools/venv/bin/python
job=jobs/payments.toml
table=demo-warehouse/payments
rm -rf "$table"

echo "== 1. a topic with 4 partitions and 200,000 payment events (0.2% malformed, 5% out of order)"
"$sluice" generate --topic payments --create-partitions 4 --count 200000 \
  --start 2026-11-24T09:00:00Z --span 6h --malformed-permille 2

echo
echo "== 2. sluice run --once --job $job"
"$sluice" run --once --job "$job"

echo
echo "== 3. a second run finds nothing new and publishes nothing"
"$sluice" run --once --job "$job"

echo
echo "== 4. the table's layout"
(cd "$table" && find . -name '*.parquet' | sed 's|/[^/]*$||' | sort | uniq -c | sed 's/^ */  /')
echo "  manifest entries: $(ls "$table/_sluice/log" | wc -l) in $table/_sluice/log/"

echo
echo "== 5. manifest summary (sluice files --json)"
"$sluice" files --job "$job" --json >demo-warehouse/files.jsonl
"$py" - <<'PY'
import json
files = [json.loads(l) for l in open("demo-warehouse/files.jsonl")]
rows = sum(f["rows"] for f in files)
mb = sum(f["bytes"] for f in files) / 1e6
print(f"  {len(files)} data files, {rows:,} rows, {mb:.1f} MB of zstd Parquet")
for f in files[:3]:
    print(f"  {f['path']}  rows={f['rows']} partition={f['partition']} offsets=[{f['first_offset']}, {f['next_offset']})")
print("  ...")
PY
echo "  dead-letter files: $("$sluice" files --job "$job" --dead-letters | wc -l)"

echo
echo "== 6. sluice status (the table against the broker) and sluice verify (an audit)"
"$sluice" status --job "$job"
"$sluice" verify --job "$job" | tail -1

echo
echo "== 7. an analyst's query: DuckDB reads the Delta table ($table/_delta_log), no sluice step"
"$py" - "$table" "$sluice" "$job" <<'PY'
import os, subprocess, sys
sys.path.insert(0, "tests/support")
from sql import connect  # DuckDB with the Delta extension from the venv's wheel, offline
table, sluice, job = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3]
con = connect()
con.execute(f"CREATE VIEW payments AS SELECT * FROM delta_scan('{table}')")
print(con.sql("""
  SELECT date, hour, count(*) AS events, count(DISTINCT event_id) AS distinct_ids,
         sum(amount) FILTER (WHERE status = 'CAPTURED') AS captured
  FROM payments GROUP BY ALL ORDER BY ALL"""))
print(con.sql("SELECT currency, count(*) AS events, sum(amount) AS volume FROM payments GROUP BY 1 ORDER BY 3 DESC"))
# The same table through its Iceberg metadata (the job opts in): the same rows, each once.
print(con.sql(f"""
  SELECT 'delta' AS read_through, count(*) AS events, count(DISTINCT (_partition, _offset)) AS offsets FROM delta_scan('{table}')
  UNION ALL
  SELECT 'iceberg', count(*), count(DISTINCT (_kafka_partition, _offset)) FROM iceberg_scan('{table}')"""))
# Dead letters are not part of the Delta table: the manifest lists them.
out = subprocess.run([sluice, "files", "--job", job, "--dead-letters"], check=True, capture_output=True, text=True)
dead = [f.removeprefix("file://") for f in out.stdout.split()]
if dead:
    print(con.sql(f"SELECT partition, \"offset\", left(error, 60) AS error FROM read_parquet({dead!r}) ORDER BY 1, 2 LIMIT 5"))
PY

echo
echo "== 8. closed windows: every partition's watermark (latest event time - 10m) is past them"
"$sluice" wait --job "$job" --window-closed 2026-11-24T13:00:00Z --timeout 10s
"$sluice" wait --job "$job" --window-closed 2026-11-24T14:30:00Z --timeout 1s || echo "  (window 14:00 is still open: exit $?)"
echo "  markers for schedulers: $(ls "$table/_sluice/closed" | grep -c Z.json) in $table/_sluice/closed/, e.g. $(ls "$table/_sluice/closed" | head -1)"

echo
echo "== 9. small files: three more scheduled runs of a few minutes each, then sluice compact"
for i in 1 2 3; do
  "$sluice" generate --topic payments --count 3000 --first-id $((200000 + i * 3000)) \
    --start 2026-11-24T14:$((i * 10)):00Z --span 10m --seed $((i + 7)) 2>/dev/null
  "$sluice" run --once --job "$job" >/dev/null 2>&1
done
before=$("$sluice" files --job "$job" | wc -l)
"$sluice" compact --job "$job" --target-size 8MiB >/dev/null
after=$("$sluice" files --job "$job" | wc -l)
echo "  data files: $before before, $after after (each compacted file lists the offset spans of its rows)"
"$sluice" verify --job "$job" | tail -1
