#!/usr/bin/env bash
# Start a one-node Slurm (slurmctld + slurmd + munge, Debian packages) on a machine that has no Slurm configuration,
# so the tests that submit the project's real sbatch scripts (tests/ops/test_slurm.py) run. Idempotent; needs root.
# A machine with an existing /etc/slurm/slurm.conf (a real cluster, even one whose nodes are down) is never touched.
# What this script starts and writes is recorded in $STATE_FILE; .ci/slurm_down.sh stops exactly that.
# Facts behind the configuration: docs/DESIGN notes ("a real Slurm on the CPU machine").
set -euo pipefail

SLURM_CONF=${SLURM_CONF_PATH:-/etc/slurm/slurm.conf}
STATE_FILE=${SLURM_CI_STATE:-/var/run/megatron-agentic-ci-slurm.state}

if command -v sinfo >/dev/null 2>&1 && sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mixed|alloc'; then
  echo "[slurm] already running: $(sinfo -h -o '%N %T' | head -n1)"
  exit 0
fi
if [[ -e "$SLURM_CONF" && ! -e "$STATE_FILE" ]]; then
  echo "[slurm] $SLURM_CONF exists (configured outside this script): not touching it; the Slurm tests use it as is" >&2
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "[slurm] not root: cannot install/start Slurm; the Slurm tests will be skipped" >&2
  exit 0
fi
record() { echo "$1" >> "$STATE_FILE"; }  # record KEY=VALUE lines for slurm_down.sh
[[ -e "$STATE_FILE" ]] || : > "$STATE_FILE"
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

host=$(hostname)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
mkdir -p /etc/munge /var/run/munge /var/log/munge /var/lib/munge /etc/slurm /var/spool/slurmctld /var/spool/slurmd \
  /var/log/slurm
if [[ ! -s /etc/munge/munge.key ]]; then
  head -c 1024 /dev/urandom > /etc/munge/munge.key
  record "file=/etc/munge/munge.key"
fi
chown -R munge:munge /etc/munge /var/run/munge /var/log/munge /var/lib/munge
chmod 400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
  su -s /bin/sh munge -c /usr/sbin/munged
  record "pidfile=/var/run/munge/munged.pid"
fi

record "file=$SLURM_CONF"
cat > "$SLURM_CONF" <<CONF
ClusterName=ci
SlurmctldHost=${host}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/var/run/slurmctld.pid
SlurmdPidFile=/var/run/slurmd.pid
ReturnToService=2
MinJobAge=600
KillWait=30
NodeName=${host} CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=ci Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
if ! pgrep -x slurmctld >/dev/null; then slurmctld; record "pidfile=/var/run/slurmctld.pid"; fi
if ! pgrep -x slurmd >/dev/null; then slurmd; record "pidfile=/var/run/slurmd.pid"; fi
for _ in $(seq 1 30); do
  if sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mixed|alloc'; then
    echo "[slurm] up: $(sinfo -h -o '%N %c CPUs %T' | head -n1)"
    exit 0
  fi
  sleep 1
done
echo "[slurm] did not come up; see /var/log/slurm/" >&2
exit 1
