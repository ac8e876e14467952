#!/usr/bin/env bash
# Bring up a one-node SLURM (Debian slurm-wlm 22.05 + munge) on this machine for CI.
# Writes its state to $SLURM_STATE (default /tmp/cartcohort-slurm) and pid files there.
set -euo pipefail
STATE=${SLURM_STATE:-/tmp/cartcohort-slurm}
if ! command -v apt-get >/dev/null; then
  echo "!!! apt-get unavailable: cannot install SLURM here; SKIPPING the SLURM test !!!" >&2
  exit 3
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
mkdir -p "$STATE"/{spool,ctld,log}
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(awk '/MemTotal/ {printf "%d", $2/1024*0.9}' /proc/meminfo)
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=cartcohort
SlurmctldHost=${HOST}(127.0.0.1)
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=main Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MinJobAge=600
SlurmUser=root
SlurmdUser=root
StateSaveLocation=${STATE}/ctld
SlurmdSpoolDir=${STATE}/spool
SlurmctldPidFile=${STATE}/slurmctld.pid
SlurmdPidFile=${STATE}/slurmd.pid
SlurmctldLogFile=${STATE}/log/slurmctld.log
SlurmdLogFile=${STATE}/log/slurmd.log
CONF
install -d -o munge -g munge /run/munge
if [ ! -f /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
: > "$STATE/pids"
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged
  echo "munged $(pgrep -n -x munged)" >> "$STATE/pids"
fi
slurmctld -i
for _ in $(seq 20); do [ -s "$STATE/slurmctld.pid" ] && break; sleep 0.5; done
echo "slurmctld $(cat "$STATE/slurmctld.pid")" >> "$STATE/pids"
slurmd
for _ in $(seq 20); do [ -s "$STATE/slurmd.pid" ] && break; sleep 0.5; done
echo "slurmd $(cat "$STATE/slurmd.pid")" >> "$STATE/pids"
for _ in $(seq 60); do
  state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
  [ "$state" = "idle" ] && { echo "SLURM up: node $HOST idle"; exit 0; }
  sleep 1
done
echo "SLURM did not become idle; last state: ${state:-none}" >&2
cat "$STATE"/log/*.log >&2 || true
exit 1
