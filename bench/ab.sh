#!/usr/bin/env bash
# Same-time A/B of two jobcast builds in embedded mode: both run at once, each `jobcast serve`
# with its own `jobcast bench rpc` client, so both see the same machine at the same moment.
# This machine's speed moves by half within the hour (the same binary ran 50k
# and 75k jobs/s), which buries a few percent in runs taken one after the
# other; side by side, runs of one build against itself agree within 2.5 %.
#
#   bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]     # default 6 rounds of about 17 s
#
# Each round swaps which build starts first. Prints each round's jobs/s and server CPU per job
# (over 5 s in mid-run; jobs counted from the server's jobcast_job_calls_total), then the
# median of NEW/OLD. ENV_A and ENV_B set environment variables for the servers (for
# measurement switches). Each build gets half of the machine, so this ranks changes by the work
# they save; confirm a change that trades latency for work with runs of one build alone.
set -euo pipefail

A="$1"
B="$2"
ROUNDS="${3:-6}"
WORK="${WORK:-/tmp/jobcast-ab}"
mkdir -p "$WORK"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
calls() {
  curl -fsS -H "authorization: Bearer k" "http://127.0.0.1:$1/metrics" \
    | awk '/^jobcast_job_calls_total/ {s+=$2} END {print s+0}'
}

# one BINARY ENV NAME: one server and its client; writes "jobs/s us-per-job" to $WORK/NAME.
one() {
  local bin="$1" env="$2" name="$3" port data server client
  port=$(free_port)
  data="$WORK/data-$name"
  rm -rf "$data"
  env $env "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" --jwt-secret s --api-key k \
    "${JOBCAST_LIMITS[@]}" >"$WORK/$name.log" 2>&1 &
  server=$!
  wait_http "http://127.0.0.1:$port/healthz"
  "$bin" bench rpc -c 50 -w 10 -d 10s --warmup 2s --users 50 --url "ws://127.0.0.1:$port/ws" \
    --jwt-secret s --json >"$WORK/$name.json" 2>/dev/null &
  client=$!
  sleep 4
  local s0 j0 s1 j1
  s0=$(ticks "$server"); j0=$(calls "$port")
  sleep 5
  s1=$(ticks "$server"); j1=$(calls "$port")
  wait "$client" || true
  kill "$server"; wait "$server" 2>/dev/null || true
  python3 -c "
import json
v = json.load(open('$WORK/$name.json'))
print(round(v['completedPerSec']), round(($s1 - $s0) * 1e4 / max(1, $j1 - $j0), 2))" >"$WORK/$name"
}

: >"$WORK/rounds"
for i in $(seq 1 "$ROUNDS"); do
  if [ $((i % 2)) = 1 ]; then
    one "$A" "${ENV_A:-}" a & sleep 0.2; one "$B" "${ENV_B:-}" b & wait
  else
    one "$B" "${ENV_B:-}" b & sleep 0.2; one "$A" "${ENV_A:-}" a & wait
  fi
  read -r ja ca <"$WORK/a"
  read -r jb cb <"$WORK/b"
  echo "$ja $ca $jb $cb" >>"$WORK/rounds"
  echo "round $i: old $ja jobs/s ($ca µs/job)   new $jb jobs/s ($cb µs/job)   new/old $(python3 -c "print(round($jb / $ja, 3))")"
done
python3 - "$WORK/rounds" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
r = [b / a for a, _, b, _ in rows]
c = [cb / ca for _, ca, _, cb in rows]
print(f"median new/old jobs/s {statistics.median(r):.3f} (rounds {', '.join(f'{x:.3f}' for x in r)})")
print(f"median new/old server CPU per job {statistics.median(c):.3f}")
PY
