#!/usr/bin/env bash
# Side-by-side comparison of jobcast with the original design (../shared/reference: Bun +
# Fastify + BullMQ + Redis, and the Bun-native pub/sub server), on this machine, in one run.
#
# Every load runs against each system in turn, A B A B (ROUNDS rounds), with the same
# `jobcast bench` client. Each system gets fresh processes (and a fresh redis-server) on free
# loopback ports, stopped by pid afterwards. Results: one JSON line per run in
# $WORK/results.jsonl, and a Markdown summary (figures, ratios, targets met or not) in
# $WORK/summary.md, printed at the end.
#
#   bench/compare.sh                      # everything, 3 rounds, 10 s per load (~15 min)
#   ROUNDS=1 DURATION=5s bench/compare.sh # quicker
#   ONLY="jobs" bench/compare.sh          # jobs | fanout | idle | scale, space-separated
#
# `scale` is jobcast only (the reference has no counterpart in the targets): SCALE_N
# connections (250,000) over SCALE_GATEWAYS gateway processes (14: each holds under its
# 20,000-file limit) on one Redis, held SCALE_HOLD (60 s) with heartbeats on, from as many
# client processes, each from its own loopback address and choosing its own ports: left to
# the kernel, the search for a free ephemeral port took both cores from about 200,000
# connections on and the run collapsed. It reports drops and the gateways' total resident
# memory. It runs once, after the rounds.
#
# Before the rounds and after them, `jobcast bench intrinsic` measures for 10 s how late the
# machine itself wakes a sleeping thread, with nothing else running: the floor under every
# latency tail of the run (docs/decisions.md, session 13).
#
# Needs: cargo, redis-server (apt-get install -y redis-server), node/npm (for the reference's
# npm install, which also brings Bun), python3, curl.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REF_SRC="${REFERENCE_DIR:-$ROOT/../shared/reference}"
WORK="${WORK:-/tmp/jobcast-compare}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
ONLY="${ONLY:-jobs fanout idle scale}"
IDLE_N="${IDLE_N:-19000}"
IDLE_HOLD="${IDLE_HOLD:-30s}"
SCALE_N="${SCALE_N:-250000}"
SCALE_GATEWAYS="${SCALE_GATEWAYS:-14}"
SCALE_HOLD="${SCALE_HOLD:-60s}"
SECRET=dev-secret
KEY=dev-api-key
export JWT_SECRET=$SECRET API_KEY=$KEY
RUN_DIR="$WORK/run"
export RUN_DIR
JOBCAST="$ROOT/target/release/jobcast"
RESULTS="$WORK/results.jsonl"
PIDS=()
DATA_DIRS=()

mkdir -p "$WORK" "$RUN_DIR"
: >"$RESULTS"

log() { echo "[compare] $*" >&2; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  PIDS=()
  # The embedded stores' files (hundreds of MB each after a closed-loop run).
  [ ${#DATA_DIRS[@]} -eq 0 ] || rm -rf "${DATA_DIRS[@]}"
  DATA_DIRS=()
  (cd "$WORK/reference" 2>/dev/null && ./run.sh stop >/dev/null 2>&1) || true
}
trap stop_all EXIT

# bench LABEL SYSTEM ROUND ARGS...: runs `jobcast bench ARGS --json` and records its JSON line.
bench() {
  local label=$1 system=$2 round=$3
  shift 3
  log "$label / $system / round $round: jobcast bench $*"
  local out err="$RUN_DIR/bench-$label-$system-$round.err"
  # Each run's warnings (a failed connect says why) are kept beside the servers' logs.
  out=$("$JOBCAST" bench "$@" --json 2>"$err" | tail -n 1) || true
  if [ -z "$out" ]; then out='{"error":"no result"}'; cat "$err" >&2; fi
  python3 - "$label" "$system" "$round" "$out" >>"$RESULTS" <<'PY'
import json, sys
label, system, rnd, line = sys.argv[1:5]
try:
    v = json.loads(line)
except ValueError:
    v = {"error": line}
v.update({"load": label, "system": system, "round": int(rnd)})
print(json.dumps(v))
PY
}

# The start_* functions set PORT (and PID, the server's pid) and record every pid they start
# in PIDS; they run in this shell (never in $(...)), so stop_all sees them.
start_redis() {
  local port
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$RUN_DIR/redis-$port.pid" --logfile "$RUN_DIR/redis-$port.log" --dir "$RUN_DIR" >/dev/null
  for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && [ -s "$RUN_DIR/redis-$port.pid" ] && break; sleep 0.05; done
  PIDS+=("$(cat "$RUN_DIR/redis-$port.pid")")
  REDIS="redis://127.0.0.1:$port"
}

# jobcast_bg NAME ARGS...: starts jobcast in the background; sets PID.
jobcast_bg() {
  local name=$1
  shift
  "$JOBCAST" "$@" >"$RUN_DIR/$name.log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
}

# --- the systems under test -------------------------------------------------------------
start_reference_jobs() { # Fastify gateway + 1 BullMQ worker + Redis
  start_redis
  PORT=$(free_port)
  (cd "$WORK/reference" && REDIS_URL=$REDIS ./run.sh start-fastify "$PORT" >&2 && REDIS_URL=$REDIS ./run.sh start-worker 1 >&2)
  sleep 1
}
start_jobcast_redis() { # 1 gateway + 1 worker process + Redis
  start_redis
  PORT=$(free_port)
  jobcast_bg "worker-$PORT" worker --redis "$REDIS"
  jobcast_bg "gateway-$PORT" gateway --listen "127.0.0.1:$PORT" --redis "$REDIS" --jwt-secret "$SECRET" --api-key "$KEY" "${JOBCAST_LIMITS[@]}"
  wait_http "http://127.0.0.1:$PORT/healthz"
  for _ in $(seq 1 100); do
    [ "$(redis-cli -u "$REDIS" zcard '{jobcast}:workers')" -gt 0 ] && break
    sleep 0.05
  done
}
start_jobcast_serve() { # one process, embedded store
  PORT=$(free_port)
  rm -rf "$WORK/data-$PORT"
  DATA_DIRS+=("$WORK/data-$PORT")
  jobcast_bg "serve-$PORT" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data-$PORT" --jwt-secret "$SECRET" --api-key "$KEY" "${JOBCAST_LIMITS[@]}"
  wait_http "http://127.0.0.1:$PORT/healthz"
}
start_bun() { # Bun-native, in-process pub/sub
  PORT=$(free_port)
  (cd "$WORK/reference" && REDIS_URL= ./run.sh start-bun "$PORT" >&2)
  PID=$(cat "$RUN_DIR/bun-$PORT.pid")
}

# --- preparation --------------------------------------------------------------------------
log "building jobcast (release)"
(cd "$ROOT" && cargo build --release --quiet)
if [ ! -x "$WORK/reference/fastify-bullmq/node_modules/.bin/bun" ]; then
  log "installing the reference from $REF_SRC into $WORK/reference"
  rm -rf "$WORK/reference"
  cp -r "$REF_SRC" "$WORK/reference"
  chmod -R u+w "$WORK/reference"
  (cd "$WORK/reference" && ./run.sh install >&2)
fi
command -v redis-server >/dev/null || { log "redis-server is missing: apt-get install -y redis-server"; exit 1; }
ulimit -n 20000 2>/dev/null || true

RPC_CLOSED=(rpc -c 50 -w 10 -d "$DURATION" --warmup 2s --users 50)
RPC_OPEN=(rpc -c 50 --rate 2000 -d "$DURATION" --warmup 2s --users 50)

bench intrinsic machine 1 intrinsic -d 10s
for round in $(seq 1 "$ROUNDS"); do
  if [[ " $ONLY " == *" jobs "* ]]; then
    for system in reference jobcast-redis jobcast-embedded; do
      case $system in
        reference) start_reference_jobs ;;
        jobcast-redis) start_jobcast_redis ;;
        jobcast-embedded) start_jobcast_serve ;;
      esac
      bench jobs-closed "$system" "$round" "${RPC_CLOSED[@]}" --url "ws://127.0.0.1:$PORT/ws"
      bench jobs-open "$system" "$round" "${RPC_OPEN[@]}" --url "ws://127.0.0.1:$PORT/ws"
      stop_all
    done
  fi
  if [[ " $ONLY " == *" fanout "* ]]; then
    for shape in "1000 500" "10000 30"; do
      read -r subs rate <<<"$shape"
      for system in bun-native jobcast; do
        if [ "$system" = bun-native ]; then start_bun; else start_jobcast_serve; fi
        bench "fanout-${subs}x${rate}" "$system" "$round" fanout -s "$subs" -r "$rate" -d "$DURATION" \
          --api-key "$KEY" --url "ws://127.0.0.1:$PORT/ws"
        stop_all
      done
    done
  fi
  if [[ " $ONLY " == *" idle "* ]]; then
    for system in bun-native jobcast; do
      if [ "$system" = bun-native ]; then start_bun; else start_jobcast_serve; fi
      bench "idle-$IDLE_N" "$system" "$round" idle -n "$IDLE_N" --processes 2 \
        --source 127.0.0.2,127.0.0.3 --hold "$IDLE_HOLD" --pid "$PID" --url "ws://127.0.0.1:$PORT/ws"
      stop_all
    done
  fi
done

bench intrinsic machine 2 intrinsic -d 10s

if [[ " $ONLY " == *" scale "* ]]; then
  start_redis
  urls=() pids=() sources=()
  for g in $(seq 1 "$SCALE_GATEWAYS"); do
    PORT=$(free_port)
    jobcast_bg "scale-gateway-$PORT" gateway --listen "127.0.0.1:$PORT" --redis "$REDIS" \
      --jwt-secret "$SECRET" --api-key "$KEY" "${JOBCAST_LIMITS[@]}"
    wait_http "http://127.0.0.1:$PORT/healthz"
    urls+=("ws://127.0.0.1:$PORT/ws") pids+=("$PID") sources+=("127.0.0.$((g + 1))")
  done
  join() { local IFS=,; echo "$*"; }
  bench "scale-$SCALE_N" jobcast 1 idle -n "$SCALE_N" --processes "$SCALE_GATEWAYS" \
    --source "$(join "${sources[@]}")" --hold "$SCALE_HOLD" --pid "$(join "${pids[@]}")" \
    --url "${urls[0]}" --also "$(join "${urls[@]:1}")"
  stop_all
fi

python3 "$ROOT/bench/summarize.py" "$RESULTS" >"$WORK/summary.md"
cat "$WORK/summary.md"
