#!/usr/bin/env bash
# Stop the daemons started by up.sh, by pid (up.sh records them in $SLURM_STATE/pids).
STATE=${SLURM_STATE:-/tmp/cartcohort-slurm}
[ -f "$STATE/pids" ] || exit 0
while read -r name pid; do
  [ -n "$pid" ] || continue
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null
  echo "stopped $name (pid $pid)"
done < "$STATE/pids"
rm -f "$STATE/pids"
