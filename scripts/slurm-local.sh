#!/usr/bin/env bash
# scripts/slurm-local.sh up|down|status — a live single-node SLURM on this machine, for tests and demos.
#
#   up      install Debian's slurmctld + slurmd + munge when missing (root + apt), write a minimal
#           config for this machine (its CPUs and memory, partitions `debug` (default) and `urgent`,
#           no accounting), start munged, slurmctld and slurmd without systemd, wait for the node to
#           be idle. Idempotent: a running cluster is left as it is.
#   down    stop exactly the daemons `up` started (their pids are kept under $STATE_DIR).
#   status  what runs, and sinfo.
#
# Exit codes: 0 ok; 3 cannot (not root, no apt, packages missing) — the reason is printed;
# 1 something failed (the daemon logs are under $STATE_DIR/log).
#
# Preemption: `urgent` (PriorityTier 2) preempts `debug` (PreemptMode=REQUEUE). With
# SlurmctldParameters=preempt_send_user_signal a preempted job gets its --signal (submitit's USR2)
# first and SIGTERM after GraceTime, so it can checkpoint before the kill. (22.05 has no
# PreemptParameters key: writing it stops both daemons at start-up.)
set -euo pipefail

STATE_DIR=${SLURM_LOCAL_STATE:-/var/lib/slurm-local}
CONF=/etc/slurm/slurm.conf
MARKER="# written by peftbench scripts/slurm-local.sh"
PKGS=(slurmctld slurmd slurm-client munge)

say() { echo "slurm-local: $*" >&2; }
cannot() { say "cannot: $*"; exit 3; }

running() {   # pidfile -> 0 when its process is alive
  [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

node_state() { sinfo -h -N -o %T 2>/dev/null | head -n1; }

install_packages() {
  local missing=()
  for bin in slurmctld slurmd sbatch munged; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $(id -u) -eq 0 ]] || cannot "not root, and ${missing[*]} not installed"
  command -v apt-get >/dev/null 2>&1 || cannot "no apt-get to install ${missing[*]}"
  say "installing ${PKGS[*]} (apt)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PKGS[@]}" >/dev/null
}

write_config() {
  if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
    cannot "$CONF exists and was not written by this script; not touching a real cluster's config"
  fi
  local host node_line mem
  host=$(hostname -s)
  # slurmd -C: this machine's sockets/cores/threads and memory as slurmd will detect them, so the
  # node registers instead of being drained for "Low RealMemory". Keep 5% of memory for the OS.
  node_line=$(slurmd -C | head -n1 | sed -E 's/ RealMemory=[0-9]+//')
  mem=$(slurmd -C | head -n1 | sed -E 's/.*RealMemory=([0-9]+).*/\1/')
  mem=$((mem * 95 / 100))
  mkdir -p "$STATE_DIR"/{ctld,spool,log} /etc/slurm
  cat > "$CONF.tmp" <<EOF
$MARKER
ClusterName=peftbench-local
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
# no cgroups and no systemd in a container: track job processes by parent pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# no accounting daemon: sacct answers nothing, which the harness must cope with
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
# a requeued job waits cred_expire + 1 s before it may start again (120 s by default): the minimum (5)
# here, and schedule every 2 s, so a requeue test does not sit in the queue. (The credential only has to
# reach this node's slurmd within 5 s of the step's start: no prolog, no remote nodes.)
AuthInfo=cred_expire=5
SchedulerParameters=sched_interval=2,bf_interval=2
KillWait=30
MinJobAge=300
# preemption delivers the job's --signal before SIGTERM (see the header)
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
$node_line RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=30
PartitionName=urgent Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=2
EOF
  if cmp -s "$CONF.tmp" "$CONF"; then rm -f "$CONF.tmp"; return 1; fi
  mv "$CONF.tmp" "$CONF"   # changed (or new): the caller reconfigures running daemons
}

start_munge() {
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  [[ -s /etc/munge/munge.key ]] || { mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || \
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 1 20); do [[ -s /run/munge/munged.pid ]] && break; sleep 0.2; done
  cp /run/munge/munged.pid "$STATE_DIR/munged.pid"   # munged forks: its own pidfile has the daemon's pid
}

wait_idle() {
  local i state
  for i in $(seq 1 60); do
    state=$(node_state)
    case $state in
      idle|mixed|allocated) return 0 ;;
      down*|drain*|fail*) scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  say "node did not become idle (state: ${state:-none}); logs: $STATE_DIR/log"
  return 1
}

up() {
  [[ $(id -u) -eq 0 ]] || { command -v sinfo >/dev/null && [[ $(node_state) == idle || $(node_state) == mixed ]] \
    && { say "not root, but a SLURM node is up"; return 0; }; cannot "not root"; }
  install_packages
  local changed=0
  write_config && changed=1
  if running "$STATE_DIR/slurmctld.pid" && running "$STATE_DIR/slurmd.pid"; then
    if [[ $changed == 1 ]]; then   # AuthInfo needs a restart, not just `scontrol reconfigure`
      say "config changed: restarting"; down
    else
      wait_idle && { say "already up"; return 0; }
    fi
  fi
  start_munge
  running "$STATE_DIR/slurmctld.pid" || slurmctld
  running "$STATE_DIR/slurmd.pid" || slurmd
  wait_idle
  say "up: $(sinfo -h -o '%P %D %c CPUs %m MB %T' | tr '\n' ';')"
}

down() {
  local name pidfile
  for name in slurmd slurmctld munged; do
    pidfile="$STATE_DIR/$name.pid"
    if running "$pidfile"; then
      kill "$(cat "$pidfile")"
      for _ in $(seq 1 20); do running "$pidfile" || break; sleep 0.5; done
      say "stopped $name"
    fi
    rm -f "$pidfile"
  done
}

status() {
  local name pidfile
  for name in munged slurmctld slurmd; do
    pidfile="$STATE_DIR/$name.pid"
    if running "$pidfile"; then echo "$name: running (pid $(cat "$pidfile"))"; else echo "$name: stopped"; fi
  done
  command -v sinfo >/dev/null && sinfo 2>/dev/null || true
  running "$STATE_DIR/slurmctld.pid" && running "$STATE_DIR/slurmd.pid"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
