#!/usr/bin/env bash
# Stop what .ci/slurm_up.sh started, and only that: the daemons whose pid files it recorded (slurmd, slurmctld,
# munged, in reverse order) and the files it wrote (slurm.conf, munge key). Does nothing on a machine where
# slurm_up.sh started nothing (no state file), e.g. a real cluster.
set -euo pipefail

STATE_FILE=${SLURM_CI_STATE:-/var/run/megatron-agentic-ci-slurm.state}
if [[ ! -e "$STATE_FILE" ]]; then
  echo "[slurm] nothing to stop: $STATE_FILE not found (slurm_up.sh started nothing here)"
  exit 0
fi
mapfile -t entries < <(tac "$STATE_FILE")
for entry in "${entries[@]}"; do
  key=${entry%%=*}
  value=${entry#*=}
  case "$key" in
    pidfile)
      pid=$(cat "$value" 2>/dev/null || true)
      if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        echo "[slurm] stopped pid $pid ($value)"
      fi
      ;;
    file)
      rm -f "$value" && echo "[slurm] removed $value"
      ;;
  esac
done
rm -f "$STATE_FILE"
echo "[slurm] down"
