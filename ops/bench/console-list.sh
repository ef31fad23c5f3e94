#!/usr/bin/env bash
# The console's runs list against a large runs table: creates a database with N runs
# (default 100,000; statuses, pipelines, roles and output types mixed), starts the release
# coordinator on it and times the list pages the console serves (first page, a filter,
# a deep page by cursor), each the median of 20 requests. Leaves nothing behind.
#
#   ops/bench/console-list.sh [N]        (after `cargo build --release --bins`)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
N="${1:-100000}"
BIN="${BIN:-target/release}"
DB="rf_console_bench_$$"
PORT=$((20000 + RANDOM % 10000))
export PGUSER="${PGUSER:-postgres}"
ADMIN="${RENDERFLEET_TEST_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
BASE="${ADMIN%/*}"
psql "$ADMIN" -qc "CREATE DATABASE $DB"
cleanup() {
  [ -n "${CP:-}" ] && kill "$CP" 2>/dev/null && wait "$CP" 2>/dev/null || true
  psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
}
trap cleanup EXIT
DATABASE_URL="$BASE/$DB" RENDERFLEET_HTTP_ADDR="127.0.0.1:$PORT" RENDERFLEET_AUTH__OPEN=true RENDERFLEET_METRICS_ADDR= \
  RENDERFLEET_BROKER_PREFIX="rf-console-bench-$$" RUST_LOG=warn "$BIN/coordinator" >/dev/null 2>&1 &
CP=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done
psql "$BASE/$DB" -q <<SQL
INSERT INTO runs (id, pipeline, role, subject, graph, status, nodes_total, nodes_done, error, output_type_key, created_at, finished_at)
SELECT gen_random_uuid(),
       (ARRAY['graph','legacy'])[1 + i % 2],
       (ARRAY['authoritative','authoritative','shadow','fallback'])[1 + i % 4],
       jsonb_build_object('cad_file', 'part-' || (i % 997) || '.stp'), '{"nodes": [], "edges": []}',
       (ARRAY['succeeded','succeeded','succeeded','failed','running','cancelled'])[1 + i % 6],
       5, 5, CASE WHEN i % 6 = 3 THEN jsonb_build_object('node_id', 'still', 'message', 'node failed') END,
       'type-' || (i % 7), now() - make_interval(secs => i), now() - make_interval(secs => i) + interval '3 seconds'
FROM generate_series(1, $N) AS i;
ANALYZE runs;
SQL
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_page() {
  local url="http://127.0.0.1:$PORT$1"
  curl -fs -o /dev/null "$url" || { echo "GET $1 failed" >&2; exit 1; }
  for _ in $(seq 20); do curl -s -o /dev/null -w '%{time_total}\n' "$url"; done | median
}
CURSOR=$(psql "$BASE/$DB" -Atc "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"%2B00:00\"') || ',' || id FROM runs ORDER BY created_at DESC, id DESC OFFSET $((N / 2)) LIMIT 1")
printf '%-58s %s\n' "console runs list, $N runs in the table" "median of 20 requests (s)"
printf '%-58s %s\n' "first page (50 newest)" "$(time_page /console/runs)"
printf '%-58s %s\n' "filtered: status=failed" "$(time_page '/console/runs?status=failed')"
printf '%-58s %s\n' "filtered: output_type=type-3, pipeline=legacy" "$(time_page '/console/runs?output_type=type-3&pipeline=legacy')"
printf '%-58s %s\n' "deep page: after the $((N / 2))th run (keyset cursor)" "$(time_page "/console/runs?after=$CURSOR")"
printf '%-58s %s\n' "filtered deep page: status=cancelled after the middle" "$(time_page "/console/runs?status=cancelled&after=$CURSOR")"
