#!/usr/bin/env bash
# One fan-out run of one system alone, and what it cost: the server's and the client's CPU (from
# /proc over 4 s in mid-run) and, with COUNT_SENDS=1, the server's send calls per second (perf,
# over 2 s). docs/decisions.md's figures measured "alone" (sessions 11 and 12) come from runs
# like these; compare.sh gives the side-by-side figures.
#
#   bench/fanout-alone.sh jobcast 1000 500                 # SYSTEM SUBSCRIBERS RATE [SERVER FLAGS...]
#   bench/fanout-alone.sh jobcast 1000 500 --topic-flush-interval 0ms
#   COUNT_SENDS=1 bench/fanout-alone.sh bun 10000 30
#
# Uses target/release/jobcast as it is (build it first; JOBCAST names another binary) and the
# reference that compare.sh installed in $WORK/reference. Env: WORK (default
# /tmp/jobcast-compare), DURATION (default 8s),
# CLIENT_FLAGS (more `bench fanout` flags), COUNT_SENDS=1. Prints one line; the client's JSON
# line is kept in $WORK/run/fanout-alone.json.
set -euo pipefail

SYSTEM="$1"
SUBS="$2"
RATE="$3"
shift 3
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
WORK="${WORK:-/tmp/jobcast-compare}"
DURATION="${DURATION:-8s}"
JOBCAST="${JOBCAST:-$ROOT/target/release/jobcast}"
export RUN_DIR="$WORK/run" JWT_SECRET=dev-secret API_KEY=dev-api-key
mkdir -p "$RUN_DIR"
[ -x "$JOBCAST" ] || { echo "build first: cargo build --release" >&2; exit 1; }
ulimit -n 20000 2>/dev/null || true

PORT=$(free_port)
DATA="$WORK/alone-data-$PORT"
case "$SYSTEM" in
  jobcast)
    "$JOBCAST" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --jwt-secret "$JWT_SECRET" \
      --api-key "$API_KEY" "${JOBCAST_LIMITS[@]}" "$@" >"$RUN_DIR/alone-serve-$PORT.log" 2>&1 &
    SERVER=$!
    ;;
  bun)
    [ -x "$WORK/reference/run.sh" ] || { echo "no reference in $WORK/reference: run bench/compare.sh once" >&2; exit 1; }
    (cd "$WORK/reference" && REDIS_URL= ./run.sh start-bun "$PORT" >/dev/null)
    SERVER=$(cat "$RUN_DIR/bun-$PORT.pid")
    ;;
  *) echo "SYSTEM is jobcast or bun" >&2; exit 2 ;;
esac
stop() {
  kill "$SERVER" 2>/dev/null || true
  if [ "$SYSTEM" = bun ]; then (cd "$WORK/reference" && ./run.sh stop >/dev/null 2>&1) || true; fi
  wait "$SERVER" 2>/dev/null || true
  rm -rf "$DATA"
}
trap stop EXIT
wait_http "http://127.0.0.1:$PORT/healthz"

OUT="$RUN_DIR/fanout-alone.json"
# shellcheck disable=SC2086 # CLIENT_FLAGS is a list of flags
"$JOBCAST" bench fanout -s "$SUBS" -r "$RATE" -d "$DURATION" --api-key "$API_KEY" \
  --jwt-secret "$JWT_SECRET" --url "ws://127.0.0.1:$PORT/ws" ${CLIENT_FLAGS:-} --json >"$OUT" 2>/dev/null &
CLIENT=$!
sleep 4
SENDS=""
if [ "${COUNT_SENDS:-}" = 1 ]; then
  perf stat -x, -e syscalls:sys_enter_sendto -p "$SERVER" -- sleep 2 2>"$RUN_DIR/alone-perf.txt" &
  PERF=$!
fi
s0=$(ticks "$SERVER"); c0=$(ticks "$CLIENT"); m0=$(head -1 /proc/stat)
sleep 4
s1=$(ticks "$SERVER"); c1=$(ticks "$CLIENT"); m1=$(head -1 /proc/stat)
if [ -n "${PERF:-}" ]; then
  wait "$PERF" || true
  SENDS=$(awk -F, '/sendto/ {printf "%.0f", $1 / 2}' "$RUN_DIR/alone-perf.txt")
fi
wait "$CLIENT" || true

python3 - "$SYSTEM" "$SUBS" "$RATE" "$((s1 - s0))" "$((c1 - c0))" "$m0" "$m1" "$SENDS" "$OUT" <<'PY'
import json, sys
system, subs, rate, ds, dc, m0, m1, sends, out = sys.argv[1:10]
a = [int(x) for x in m0.split()[1:]]
b = [int(x) for x in m1.split()[1:]]
d = [y - x for x, y in zip(a, b)]
hz = 100  # clock ticks per second in /proc
v = json.load(open(out))
lat, pub = v["latencyMs"], v.get("publishMs", {})
line = (f"{system} {subs}x{rate}: server {int(ds) / hz / 4:.0%} client {int(dc) / hz / 4:.0%} "
        f"machine idle {d[3] / sum(d):.0%}")
if sends:
    line += f" sends/s {int(sends):,}"
line += (f" | lost {v['lost']} delivery p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} "
         f"p99.9 {lat['p999']:.2f} ms | publish p50 {pub.get('p50', 0):.2f} p99 {pub.get('p99', 0):.2f} ms")
print(line)
PY
