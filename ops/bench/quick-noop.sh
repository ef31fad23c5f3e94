#!/usr/bin/env bash
# Quick throughput check (not the careful benchmark): N single-node `noop` runs are created
# while no worker runs, then W workers drain them. Throughput is read from the node
# timestamps in PostgreSQL (first start to last finish), so the HTTP submission rate does
# not enter it. Needs the services (ops/dev.sh services) and a release build
# (cargo build --release --bins).
#
#   ops/bench/quick-noop.sh [N=1000] [WORKERS=2] [CONCURRENCY=4]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
N="${1:-1000}"; WORKERS="${2:-2}"; CONC="${3:-4}"
BIN="${BIN:-target/release}"   # another build, for side-by-side comparisons
DB="rf_bench_$$"
VHOST="rf-bench-$$"
PORT=18181
PG="${PG_BASE_URL:-postgres://postgres@127.0.0.1:5432}"
psql "$PG/postgres" -qc "CREATE DATABASE $DB"
# A vhost of its own: deleting it removes every queue and exchange this run declared.
rabbitmqctl -q add_vhost "$VHOST" && rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null
PIDS=()
cleanup() {
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
}
trap cleanup EXIT
export DATABASE_URL="$PG/$DB" AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$VHOST" RENDERFLEET_HTTP_ADDR="127.0.0.1:$PORT" RENDERFLEET_AUTH__OPEN=true RUST_LOG=warn
$BIN/coordinator & PIDS+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
body='{"subject":{"kind":"bench"},"graph":{"nodes":[{"id":"n","type":"util.noop"}]}}'
t0=$(date +%s.%N)
seq "$N" | xargs -P 8 -I{} curl -fs -o /dev/null -X POST -H 'content-type: application/json' -d "$body" "http://127.0.0.1:$PORT/v1/runs"
t1=$(date +%s.%N)
for i in $(seq 1 "$WORKERS"); do
  RENDERFLEET_WORKER_ID="bench-$i" RENDERFLEET_CONCURRENCY="$CONC" RENDERFLEET_METRICS_ADDR="" $BIN/worker & PIDS+=($!)
done
until [ "$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM runs WHERE status = 'succeeded'")" = "$N" ]; do sleep 0.2; done
psql "$DATABASE_URL" -Atc "
  WITH n AS (SELECT min(started_at) AS first_start, max(finished_at) AS last_finish, count(*) AS nodes FROM node_runs),
       r AS (SELECT max(finished_at) AS last_run FROM runs)
  SELECT format('%s runs created over HTTP in %ss (%s/s, 8 curl clients)', $N, round(($t1 - $t0)::numeric, 2), round($N / ($t1 - $t0)::numeric)),
         format('%s noop nodes run by $WORKERS workers (concurrency $CONC) in %ss: %s nodes/s (first start to last finish, worker clocks)',
                nodes, round(extract(epoch FROM last_finish - first_start)::numeric, 3),
                round(nodes / extract(epoch FROM last_finish - first_start)::numeric)),
         format('... and %s nodes/s until the coordinator had marked the last run succeeded (%ss)',
                round(nodes / extract(epoch FROM last_run - first_start)::numeric),
                round(extract(epoch FROM last_run - first_start)::numeric, 3))
  FROM n, r" | tr '|' '\n'
