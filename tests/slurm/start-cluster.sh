#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine for the job-script test
# (tests/slurm.rs): installs slurm-wlm + munge if missing, writes a minimal
# /etc/slurm/slurm.conf, and starts munged, slurmctld and slurmd directly (no
# systemd), then waits until `sinfo` shows the node idle.
#
# Run as root. Idempotent: a second run leaves running daemons alone (it restarts
# them only when it had to change slurm.conf) and returns once the node is up.
# Works on a fresh Debian 12 machine without stdin (CI).
#
# Environment:
#   SLURM_WAIT_S   seconds to wait for the node to come up (default 60)
#   ZO_SKIP_APT=1  do not install packages (fail instead if they are missing)
set -euo pipefail

log() { echo "[start-cluster] $*"; }
die() { echo "[start-cluster] error: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (it installs packages and starts daemons)"

# --- packages -------------------------------------------------------------------
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in slurm-wlm munge; do have_pkg "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
  [[ "${ZO_SKIP_APT:-0}" != 1 ]] || die "missing packages: ${missing[*]} (ZO_SKIP_APT=1)"
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q </dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi
getent passwd slurm >/dev/null || die "no 'slurm' user (the slurm-wlm packages create it)"
getent passwd munge >/dev/null || die "no 'munge' user (the munge package creates it)"

# --- munge ----------------------------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  log "creating /etc/munge/munge.key"
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  rm -f /run/munge/munge.socket.2 /run/munge/munged.pid
  # munged refuses a log file that is not its own.
  touch /var/log/munge/munged.log
  chown munge:munge /var/log/munge/munged.log
  chmod 0640 /var/log/munge/munged.log
  runuser -u munge -- /usr/sbin/munged </dev/null >>/var/log/munge/munged.log 2>&1 ||
    die "munged does not start: $(tail -n 3 /var/log/munge/munged.log)"
  for _ in $(seq 50); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.2
  done
  munge -n </dev/null | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"
fi

# --- slurm.conf -----------------------------------------------------------------
host=$(hostname -s)
# At least 2 CPUs so that the 2-rank test job fits even on a 1-CPU machine;
# config_overrides makes slurmd accept the configured count over the real one.
cpus=$(nproc)
((cpus >= 2)) || cpus=2
conf=/etc/slurm/slurm.conf
new=$(mktemp)
trap 'rm -f "$new"' EXIT
cat >"$new" <<EOF
# Written by zo-hpc tests/slurm/start-cluster.sh: one-node test cluster.
ClusterName=zo-test
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE OverSubscribe=YES State=UP
EOF
install -d -m 0755 /etc/slurm
changed=0
if ! cmp -s "$new" "$conf"; then
  log "writing $conf (NodeName=$host CPUs=$cpus)"
  install -m 0644 "$new" "$conf"
  changed=1
fi
install -d -o slurm -g slurm -m 0755 /var/lib/slurm /var/lib/slurm/slurmctld /var/log/slurm /run/slurm
# slurmctld writes its log as SlurmUser; slurmd (root) writes its own.
touch /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log
chown slurm:slurm /var/log/slurm/slurmctld.log
install -d -o root -g root -m 0755 /var/lib/slurm/slurmd

# --- daemons --------------------------------------------------------------------
# They are started with their output going to their log files, so that they do not
# hold on to the caller's pipes (a test that waits for this script's output).
# running NAME: the daemon whose pid file /run/slurm/NAME.pid names is alive
# (a process of that name that is not a zombie).
running() {
  local pid stat
  pid=$(cat "/run/slurm/$1.pid" 2>/dev/null) || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $stat == "$pid ($1) "[^Z]* ]]
}
stop() {
  local pid
  running "$1" || return 0
  pid=$(cat "/run/slurm/$1.pid")
  log "stopping $1 (pid $pid): slurm.conf changed"
  kill "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  die "$1 (pid $pid) does not stop"
}
if ((changed)); then
  stop slurmd
  stop slurmctld
fi
if ! running slurmctld; then
  log "starting slurmctld"
  # The daemon switches to SlurmUser itself; -i ignores unreadable old state.
  /usr/sbin/slurmctld -i </dev/null >>/var/log/slurm/slurmctld.log 2>&1 ||
    die "slurmctld does not start: $(tail -n 3 /var/log/slurm/slurmctld.log)"
fi
if ! running slurmd; then
  log "starting slurmd"
  /usr/sbin/slurmd </dev/null >>/var/log/slurm/slurmd.log 2>&1 ||
    die "slurmd does not start: $(tail -n 3 /var/log/slurm/slurmd.log)"
fi

# --- wait for the node ----------------------------------------------------------
wait_s=${SLURM_WAIT_S:-60}
deadline=$((SECONDS + wait_s))
resumed=0
while :; do
  state=$(sinfo -h -N -n "$host" -o %t 2>/dev/null | head -n1 || true)
  case "$state" in
    idle | mix | alloc) break ;;
    down* | drain* | drng*)
      # Left down or drained by an earlier run (e.g. an unclean stop): resume once.
      if ((!resumed)); then
        log "node $host is $state: resuming it"
        scontrol update NodeName="$host" State=RESUME 2>/dev/null || true
        resumed=1
      fi
      ;;
  esac
  if ((SECONDS >= deadline)); then
    echo "--- sinfo" >&2
    sinfo -N -l >&2 || true
    echo "--- tail /var/log/slurm/slurmctld.log" >&2
    tail -n 20 /var/log/slurm/slurmctld.log >&2 || true
    echo "--- tail /var/log/slurm/slurmd.log" >&2
    tail -n 20 /var/log/slurm/slurmd.log >&2 || true
    die "node $host not up after ${wait_s}s (state '${state:-no answer}')"
  fi
  sleep 1
done
log "node $host is $state"
