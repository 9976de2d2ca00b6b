#!/usr/bin/env bash
# Start a one-node Slurm (slurmctld + slurmd + munge, Debian packages) on this machine when none is running, so the
# tests that submit the project's real sbatch scripts (tests/ops/test_slurm.py) run. Idempotent; needs root.
# Facts behind the configuration: docs/DESIGN notes ("a real Slurm on the CPU machine").
set -euo pipefail

if command -v sinfo >/dev/null 2>&1 && sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mixed|alloc'; then
  echo "[slurm] already running: $(sinfo -h -o '%N %T' | head -n1)"
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "[slurm] not root: cannot install/start Slurm; the Slurm tests will be skipped" >&2
  exit 0
fi
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
fi
chown -R munge:munge /etc/munge /var/run/munge /var/log/munge /var/lib/munge
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged

cat > /etc/slurm/slurm.conf <<CONF
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
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 30); do
  if sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mixed|alloc'; then
    echo "[slurm] up: $(sinfo -h -o '%N %c CPUs %T' | head -n1)"
    exit 0
  fi
  sleep 1
done
echo "[slurm] did not come up; see /var/log/slurm/" >&2
exit 1
