#!/usr/bin/env bash
# renderfleet developer bring-up.
#
#   ops/dev.sh demo [GRAPH]  install/start PostgreSQL and RabbitMQ and the render tools (Blender,
#                         ffmpeg, numpy, cascadio) if needed, build, start a coordinator and two
#                         workers, render a real STEP file (still, turntable MP4, .blend), print
#                         where they are, then stop what this script started.
#   ops/dev.sh up         the same stack left running (coordinator on :8080, two workers), with
#                         a fresh admin token; prints the variables renderctl needs (also in
#                         target/stack/env). `ops/dev.sh down` stops it (workers drain first).
#   ops/dev.sh test       make sure the services are up, build, run the whole test suite.
#   ops/dev.sh services   only install and start PostgreSQL and RabbitMQ.
#   ops/dev.sh bench      the orchestration benchmark (release build; Celery in a local venv);
#                         `bench --render`: the render benchmark (Blender, cache, turntables);
#                         `bench --orders`: priorities and fair share behind a backlog.
#
# Works on a fresh Debian or Ubuntu machine as root (or with sudo). Services that were
# already running are left as they were.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PG_HOST=127.0.0.1
PG_PORT=5432
export PGUSER="${PGUSER:-postgres}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
STARTED_SERVICES=()

log() { printf '\033[1m[dev.sh]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[dev.sh] error:\033[0m %s\n' "$*" >&2; exit 1; }

apt_install() {
  log "installing $* (apt-get)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; }
rabbit_up() { timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/5672" 2>/dev/null; }

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null; then apt_install postgresql postgresql-client; fi
  if ! pg_up; then
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n1)"
    [ -n "$version" ] || die "PostgreSQL is installed but has no cluster in /etc/postgresql; create one with pg_createcluster"
    log "starting PostgreSQL $version"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start
    STARTED_SERVICES+=("postgres:$version")
    for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
    pg_up || die "PostgreSQL did not come up on $PG_HOST:$PG_PORT; see /var/log/postgresql/"
  fi
  # Debian's default asks for a password over TCP; the tests and the demo connect as
  # postgres over TCP, so give that user a known password when needed.
  if ! psql -h "$PG_HOST" -p "$PG_PORT" -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
    export PGPASSWORD="${PGPASSWORD:-renderfleet}"
    if ! psql -h "$PG_HOST" -p "$PG_PORT" -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
      log "setting a password for the postgres user (TCP logins need one on this machine)"
      $SUDO runuser -u postgres -- psql -qc "ALTER USER postgres PASSWORD '$PGPASSWORD'" >/dev/null
    fi
  fi
  local auth="$PGUSER"
  if [ -n "${PGPASSWORD:-}" ]; then auth="$PGUSER:$PGPASSWORD"; fi
  export RENDERFLEET_TEST_ADMIN_URL="postgres://$auth@$PG_HOST:$PG_PORT/postgres"
  export PG_BASE_URL="postgres://$auth@$PG_HOST:$PG_PORT"
}

ensure_rabbitmq() {
  if ! command -v rabbitmq-server >/dev/null; then apt_install rabbitmq-server; fi
  if ! rabbit_up; then
    log "starting RabbitMQ"
    $SUDO rabbitmq-server -detached
    STARTED_SERVICES+=("rabbitmq")
    for _ in $(seq 1 120); do rabbit_up && break; sleep 0.5; done
    rabbit_up || die "RabbitMQ did not come up on 127.0.0.1:5672; see /var/log/rabbitmq/"
    $SUDO rabbitmqctl await_startup >/dev/null 2>&1 || true
  fi
}

ensure_rust() {
  if command -v cargo >/dev/null; then return; fi
  if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; return; fi
  log "installing Rust with rustup (renderfleet needs Rust 1.88 or newer)"
  command -v curl >/dev/null || apt_install curl ca-certificates
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
    || die "could not install Rust; install Rust 1.88+ from https://rustup.rs and run this again"
  export PATH="$HOME/.cargo/bin:$PATH"
}

ensure_build_tools() {
  command -v cc >/dev/null || apt_install build-essential
  command -v pg_isready >/dev/null || apt_install postgresql-client
}

ensure_python_venv() {
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
}

# What the render modules run: Blender 4.5 LTS as a Python module (PyPI's `bpy`, which needs
# Python 3.11 and a few X11 client libraries it links against, though it never opens a
# display) in target/bpy-venv, ffmpeg, and cascadio (OpenCASCADE STEP -> GLB) from PyPI in
# target/cad-venv, a venv over Debian's Python so it sees Debian's numpy. Workers find them
# through RENDERFLEET_TOOLS__BLENDER and RENDERFLEET_TOOLS__PYTHON.
CASCADIO_VERSION=0.1.1
BPY_VERSION=4.5.15
ensure_render_tools() {
  local missing=()
  command -v ffmpeg >/dev/null || missing+=(ffmpeg)
  /usr/bin/python3 -c 'import numpy' 2>/dev/null || missing+=(python3-numpy)
  /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  local lib
  for lib in libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libsm6 libgl1 libxext6 libxxf86vm1; do
    dpkg -s "$lib" >/dev/null 2>&1 || missing+=("$lib")
  done
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
  local venv="$ROOT/target/cad-venv"
  if ! "$venv/bin/python" -c 'import cascadio' 2>/dev/null; then
    log "installing cascadio $CASCADIO_VERSION (PyPI) into target/cad-venv"
    mkdir -p "$ROOT/target"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "cascadio==$CASCADIO_VERSION" \
      || die "could not install cascadio from PyPI into target/cad-venv"
  fi
  export RENDERFLEET_TOOLS__PYTHON="$venv/bin/python"
  local bpy="$ROOT/target/bpy-venv"
  if ! "$bpy/bin/python" -c "import bpy, sys; sys.exit(bpy.app.version_string.split()[0] != '$BPY_VERSION')" 2>/dev/null; then
    /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
      || die "Blender $BPY_VERSION as a module (PyPI's bpy) needs Python 3.11 (Debian 12's python3); this python3 is $(/usr/bin/python3 -V)"
    log "installing Blender $BPY_VERSION LTS as a Python module (PyPI's bpy, about 950 MB) into target/bpy-venv"
    mkdir -p "$ROOT/target"
    rm -rf "$bpy"
    /usr/bin/python3 -m venv "$bpy"
    "$bpy/bin/pip" install -q --disable-pip-version-check "bpy==$BPY_VERSION" \
      || die "could not install bpy $BPY_VERSION from PyPI into target/bpy-venv"
  fi
  export RENDERFLEET_TOOLS__BLENDER="$bpy/bin/python"
}

# promtool checks the alert rules in the tests. Debian ships it in `prometheus`, whose own
# service must not start on a development machine: policy-rc.d refuses it for the install.
ensure_promtool() {
  command -v promtool >/dev/null && return
  local policy=/usr/sbin/policy-rc.d created=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod +x "$policy" && created=1
  fi
  apt_install --no-install-recommends prometheus
  if [ -n "$created" ]; then $SUDO rm -f "$policy"; fi
}

# The console's browser tests drive Debian's Chromium through chromedriver.
ensure_chromium() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt_install chromium chromium-driver
  fi
}

# tests/openapi.rs fuzzes the OpenAPI document against a real coordinator with schemathesis
# (PyPI), in a venv of its own: target/schemathesis-venv.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
  local venv="$ROOT/target/schemathesis-venv"
  if "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then return; fi
  ensure_python_venv
  log "installing schemathesis $SCHEMATHESIS_VERSION (PyPI) into target/schemathesis-venv"
  mkdir -p "$ROOT/target"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
    || die "could not install schemathesis $SCHEMATHESIS_VERSION from PyPI into target/schemathesis-venv"
}

# The CAD files the demo renders: the team's fixtures beside the project when present,
# else the small assembly the project ships.
demo_cad() {
  local fixtures="${RENDERFLEET_FIXTURES:-$ROOT/../shared/fixtures/cad}"
  if [ -f "$fixtures/as1-oc-214.stp" ]; then
    DEMO_CAD_DIR="$(cd "$fixtures" && pwd)"; DEMO_CAD_FILE=as1-oc-214.stp; DEMO_PRODUCT=as1
  else
    DEMO_CAD_DIR="$ROOT/ops/examples/cad"; DEMO_CAD_FILE=bracket.stp; DEMO_PRODUCT=demo-bracket
  fi
}

services() {
  ensure_build_tools
  ensure_postgres
  ensure_rabbitmq
  log "PostgreSQL and RabbitMQ are up"
}

stop_started_services() {
  local s
  for s in "${STARTED_SERVICES[@]+"${STARTED_SERVICES[@]}"}"; do
    case "$s" in
      postgres:*) log "stopping PostgreSQL (this script started it)"; $SUDO pg_ctlcluster --skip-systemctl-redirect "${s#postgres:}" main stop || true ;;
      rabbitmq) log "stopping RabbitMQ (this script started it)"; $SUDO rabbitmqctl stop >/dev/null 2>&1 || true ;;
    esac
  done
}

PIDS=()
cleanup_demo() {
  local pid
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do wait "$pid" 2>/dev/null || true; done
  stop_started_services
}

# Builds and starts a coordinator and two workers on the demo database, with the admin token
# $RENDERFLEET_TOKEN (its hash configured), logs in $1, data in $2; their pids go to PIDS.
# Returns once the coordinator is ready, with the example materials and the demo product's
# map applied.
start_stack() {
  local logs="$1" data="$2"
  services
  ensure_render_tools
  ensure_rust
  log "building"
  cargo build --quiet --bins
  local db="${RENDERFLEET_DEMO_DB:-renderfleet}"
  psql -h "$PG_HOST" -p "$PG_PORT" -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
    || psql -h "$PG_HOST" -p "$PG_PORT" -d postgres -qc "CREATE DATABASE $db"
  export DATABASE_URL="$PG_BASE_URL/$db"
  export RENDERFLEET_HTTP_ADDR="${RENDERFLEET_HTTP_ADDR:-127.0.0.1:8080}"
  export RENDERFLEET_AUTH__TOKENS="demo:admin:$(printf %s "$RENDERFLEET_TOKEN" | sha256sum | cut -d' ' -f1)"
  mkdir -p "$logs" "$data/artifacts" "$data/scratch" "$data/out"
  log "starting the coordinator on $RENDERFLEET_HTTP_ADDR (logs in ${logs#"$ROOT"/}/)"
  # It reads the workers' store: console previews, and the node result cache's hits.
  RENDERFLEET_ARTIFACTS_DIR="$data/artifacts" setsid target/debug/coordinator >"$logs/coordinator.log" 2>&1 & PIDS+=($!)
  local i
  demo_cad
  for i in 1 2; do
    RENDERFLEET_WORKER_ID="demo-worker-$i" RENDERFLEET_METRICS_ADDR="127.0.0.1:$((9463 + i))" \
      RENDERFLEET_ARTIFACTS_DIR="$data/artifacts" RENDERFLEET_SCRATCH_DIR="$data/scratch" RENDERFLEET_CAD_DIR="$DEMO_CAD_DIR" \
      setsid target/debug/worker >"$logs/worker-$i.log" 2>&1 & PIDS+=($!)
  done
  local url="http://$RENDERFLEET_HTTP_ADDR"
  for _ in $(seq 1 100); do
    curl -fsS "$url/readyz" >/dev/null 2>&1 && break
    kill -0 "${PIDS[0]}" 2>/dev/null || { tail -n 20 "$logs/coordinator.log" >&2; die "the coordinator exited; see $logs/coordinator.log"; }
    sleep 0.2
  done
  curl -fsS "$url/readyz" >/dev/null || die "the coordinator is not ready; see $logs/coordinator.log"
  local ctl=(target/debug/renderctl --coordinator "$url")
  "${ctl[@]}" materials apply ops/examples/materials.json >/dev/null
  "${ctl[@]}" products map-set "$DEMO_PRODUCT" "ops/examples/$DEMO_PRODUCT.material-map.json" >/dev/null
}

# A fresh admin token: the coordinator stores its hash, renderctl sends it.
new_token() {
  printf 'rf_demo_%s' "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
}

STACK="$ROOT/target/stack"

# `up`: the demo's stack left running; `down` stops it.
up() {
  if [ -f "$STACK/pids" ] && xargs -r kill -0 <"$STACK/pids" 2>/dev/null; then
    log "already up (ops/dev.sh down stops it):"
    cat "$STACK/env"
    return
  fi
  RENDERFLEET_TOKEN="$(new_token)"
  export RENDERFLEET_TOKEN
  start_stack "$STACK/logs" "$STACK/data"
  printf '%s\n' "${PIDS[@]}" >"$STACK/pids"
  cat >"$STACK/env" <<ENV
export RENDERFLEET_COORDINATOR_URL=http://$RENDERFLEET_HTTP_ADDR
export RENDERFLEET_TOKEN=$RENDERFLEET_TOKEN
export PATH="$ROOT/target/debug:\$PATH"
ENV
  log "up: the console is http://$RENDERFLEET_HTTP_ADDR/console (sign in with the token), logs in target/stack/logs/"
  log "for renderctl, run:  source target/stack/env   (or paste:)"
  cat "$STACK/env"
}

down() {
  [ -f "$STACK/pids" ] || { log "nothing is up (no target/stack/pids)"; return; }
  local pid
  # SIGTERM: the workers stop taking tasks and finish the ones in hand first.
  while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done <"$STACK/pids"
  for _ in $(seq 1 150); do
    xargs -r kill -0 <"$STACK/pids" 2>/dev/null || break
    sleep 0.2
  done
  while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$STACK/pids"
  rm -f "$STACK/pids" "$STACK/env"
  log "down"
}

demo() {
  RENDERFLEET_TOKEN="$(new_token)"
  export RENDERFLEET_TOKEN
  trap cleanup_demo EXIT
  local logs="$ROOT/target/demo-logs" data="$ROOT/target/demo"
  start_stack "$logs" "$data"
  local url="http://$RENDERFLEET_HTTP_ADDR"
  local ctl=(target/debug/renderctl --coordinator "$url")
  local graph="${1:-ops/examples/order-line.json}"
  log "rendering $DEMO_CAD_FILE (product $DEMO_PRODUCT) with $graph"
  local started=$SECONDS
  "${ctl[@]}" submit "$graph" --wait --subject "{\"cad_file\": \"$DEMO_CAD_FILE\", \"product\": \"$DEMO_PRODUCT\"}" \
    | tee "$data/run.txt"
  log "done in $((SECONDS - started))s wall clock (including the CLI's polling)"
  local run_id
  run_id="$(awk '/^run /{print $2; exit}' "$data/run.txt")"
  "${ctl[@]}" -o json runs show "$run_id" > "$data/run.json"
  # Published artifacts, copied out of the content-addressed store under readable names.
  /usr/bin/python3 - "$data" <<'PY'
import json, shutil, sys
data = sys.argv[1]
run = json.load(open(f"{data}/run.json"))
names = {"image_png": "still.png", "video_mp4": "turntable.mp4", "blend": "scene.blend"}
print("  where Blender's time went (seconds):")
for n in run["nodes"]:
    for port, a in (n.get("outputs") or {}).items():
        t = isinstance(a, dict) and (a.get("meta") or {}).get("timings")
        if t and n["module"] != "publish":
            print(f"    {n['node_id']:<12} start-up {t['blender_startup_s']:.2f}  import {t['import_s']:.2f}  "
                  f"render {t['render_s']:.2f}  save {t['save_s']:.2f}  whole process {t['total_s']:.2f}")
print("  published:")
for n in run["nodes"]:
    a = (n.get("outputs") or {}).get("artifact")
    if n["module"] != "publish" or not a:
        continue
    sha = a["sha256"]
    dest = f"{data}/out/{names.get(a['kind'], sha)}"
    shutil.copyfile(f"{data}/artifacts/sha256/{sha[:2]}/{sha}", dest)
    print(f"  {a['kind']:<10} {dest}  ({a['bytes']} bytes, sha256 {sha[:12]}…)")
PY
}

ensure_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
}

# The console's front end (coordinator/web): its bundle in dist/ and its API types are
# committed so that `cargo build` alone serves the editor; CI rebuilds both from the lockfile
# and the OpenAPI document and fails when they differ from what is committed.
check_front_end() {
  ensure_node
  log "front end: npm ci, types from the OpenAPI document, bundle (must match what is committed)"
  target/debug/coordinator openapi > target/openapi.json
  (cd coordinator/web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent types && npm run --silent check && npm run --silent build)
  git diff --exit-code --stat -- coordinator/web/src/api.gen.ts coordinator/web/dist \
    || die "the committed front end differs from its sources: run \`(cd coordinator/web && npm run types && npm run build)\` and commit src/api.gen.ts and dist/"
}

run_tests() {
  services
  ensure_render_tools
  ensure_promtool
  ensure_chromium
  ensure_schemathesis
  ensure_rust
  if cargo fmt --version >/dev/null 2>&1; then
    log "checking formatting (cargo fmt)"
    cargo fmt --all --check || die "code is not formatted: run \`cargo fmt --all\`"
  else
    log "rustfmt is not installed (rustup component add rustfmt); skipping the format check"
  fi
  log "building"
  cargo build --workspace --bins --tests
  check_front_end
  log "benchmark smoke run (every row produced; figures from a debug build mean nothing)"
  ensure_python_venv
  target/debug/bench --quick --out target/bench/smoke.json
  log "render benchmark smoke run (every row produced, on real Blender)"
  target/debug/bench --render --quick --out target/bench/render-smoke.json
  log "orders benchmark smoke run (priorities and fair share behind a backlog)"
  target/debug/bench --orders --quick --out target/bench/orders-smoke.json
  log "running the test suite"
  mkdir -p target
  cargo test --workspace -- --test-threads="${RENDERFLEET_TEST_THREADS:-3}" 2>&1 | tee target/test-output.txt
  # One closing line for the whole suite (cargo prints one per test binary, the last of
  # which is often a crate without doc tests).
  awk '/^test result:/ { p += $4; f += $6 } END { printf "total: %d passed, %d failed\n", p, f }' target/test-output.txt
}

command -v curl >/dev/null || apt_install curl ca-certificates

case "${1:-}" in
  demo) demo "${@:2}" ;;
  up) up ;;
  down) down ;;
  test) run_tests ;;
  bench)
    services
    ensure_rust
    ensure_python_venv
    case " ${*:2} " in *" --render "*) ensure_render_tools ;; esac
    cargo build --release --bins
    target/release/bench "${@:2}"
    ;;
  services) services ;;
  *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
