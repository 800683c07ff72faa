# Helpers the bench scripts share: `source bench/lib.sh` (not run on its own).

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ticks PID: the CPU time the process has used (user + system), in clock ticks (1/100 s).
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# wait_http URL: waits up to 30 s for URL to answer with a success.
wait_http() {
  for _ in $(seq 1 300); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "no answer from $1" >&2
  return 1
}

# jobcast's per-IP, per-user and rate limits, all off: a load from one address and one user
# would otherwise be refused.
JOBCAST_LIMITS=(--max-connections-per-ip 0 --max-connections-per-user 0 --rate-limit 0 --max-pending-per-user 0)
