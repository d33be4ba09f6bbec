#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, for the tests marked @pytest.mark.slurm (and for trying the README's
# cluster commands by hand). Needs root (it installs Debian's packages if missing and runs the daemons as root).
#
#   tests/slurm/cluster.sh start    # install if needed, write the config, start munge + slurmctld + slurmd, wait idle
#   tests/slurm/cluster.sh status   # sinfo, or exit 1 when the daemons are not running
#   tests/slurm/cluster.sh stop     # stop the daemons this script started
#   export SLURM_CONF=/tmp/art-diffusion-slurm/slurm.conf   # then sbatch/srun/sinfo talk to it
#
# The node has the machine's CPUs (slurmd -C) and two partitions: `low` (the default) and `high`. A job submitted
# to `high` preempts (requeues) a job of `low` when it needs its CPUs, after a grace time: what a busy cluster does.
set -euo pipefail

DIR="${ART_DIFFUSION_SLURM_DIR:-/tmp/art-diffusion-slurm}"   # config, state, logs, pid files
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

log() { echo "cluster.sh: $*" >&2; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return
    fi
    [ "$(id -u)" = 0 ] || { log "SLURM is not installed and installing it needs root"; exit 1; }
    log "installing Debian's SLURM packages (slurmctld slurmd slurm-client munge)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return  # a munged is already running (the system's, or ours from an earlier start)
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating the munge key"
        mkdir -p /etc/munge
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge "$DIR/munge"
    chown munge:munge /run/munge /var/lib/munge /var/log/munge "$DIR/munge"
    runuser -u munge -- /usr/sbin/munged --pid-file="$DIR/munge/munged.pid"  # daemonizes
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.1
    done
    log "munged did not start"; exit 1
}

write_config() {
    local host cpus mem
    host="$(hostname -s)"
    cpus="$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')"
    mem="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
    mkdir -p "$DIR/state" "$DIR/spool"
    cat >"$CONF" <<EOF
# Written by tests/slurm/cluster.sh: one node ($host, $cpus CPUs) on localhost.
ClusterName=art-diffusion
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldPort=${ART_DIFFUSION_SLURM_PORT:-6817}
SlurmdPort=$(( ${ART_DIFFUSION_SLURM_PORT:-6817} + 1 ))
# no cgroups needed: processes tracked through /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
# a requeued job may start again at once; killed jobs get SIGTERM, then SIGKILL after KillWait seconds
JobRequeue=1
KillWait=30
MinJobAge=600
# preemption: a job of partition high requeues a job of partition low that holds the CPUs it needs, at once (no
# GraceTime: a job that exits on its SIGTERM within a grace time ends FAILED, not requeued)
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=low Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=high Nodes=$host MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
}

pidfile() { if [ "$1" = munged ]; then echo "$DIR/munge/munged.pid"; else echo "$DIR/$1.pid"; fi; }
running() { [ -s "$(pidfile "$1")" ] && kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; }

start() {
    install_packages
    mkdir -p "$DIR"
    start_munge
    if running slurmctld && running slurmd; then
        log "already running"
    else
        write_config
        running slurmctld || slurmctld -f "$CONF" -c -i   # -c: clean start (no old jobs), -i: ignore old state
        running slurmd || slurmd -f "$CONF" -c
    fi
    local host; host="$(hostname -s)"
    for _ in $(seq 120); do
        state="$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n1 || true)"
        case "$state" in
            idle|mixed|allocated) log "node $host is $state; export SLURM_CONF=$CONF"; return ;;
            down*|drain*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    log "the node did not become idle; see $DIR/slurmctld.log and $DIR/slurmd.log"
    tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
    exit 1
}

stop() {
    for daemon in slurmd slurmctld munged; do
        if running "$daemon"; then
            pid="$(cat "$(pidfile "$daemon")")"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    done
    log "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) if running slurmctld && running slurmd; then sinfo; else log "not running"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
