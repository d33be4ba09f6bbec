#!/usr/bin/env bash
# A local SLURM cluster, for the tests marked @pytest.mark.slurm (and for trying the docs' cluster commands by hand):
# one node on localhost, or two nodes, each a network namespace with its own hostname and address. Needs root (it
# installs Debian's packages if missing, runs the daemons as root, and makes the namespaces).
#
#   tests/slurm/cluster.sh start            # one node: install if needed, write the config, start munge +
#                                           # slurmctld + slurmd, wait until idle
#   tests/slurm/cluster.sh start --nodes 2  # two nodes (adnode1, adnode2): see below
#   tests/slurm/cluster.sh status           # sinfo -N, or exit 1 when the daemons are not running
#   tests/slurm/cluster.sh stop             # stop the daemons, remove the namespaces, links and /etc/hosts lines
#   tests/slurm/cluster.sh down adnode2     # two nodes: the node goes away (its slurmd and every process on it
#                                           # killed, the node DOWN), as a crashed machine does
#   tests/slurm/cluster.sh up adnode2       # ... and comes back (slurmd again, the node RESUMEd)
#   export SLURM_CONF=/tmp/art-diffusion-slurm/slurm.conf   # then sbatch/srun/sinfo talk to it
#
# One node has the machine's CPUs (slurmd -C). Two nodes: each is a network namespace (ip netns) joined to the bridge
# adbr0 by a veth pair, with its own address (10.77.0.11, .12; the bridge, where slurmctld listens, is 10.77.0.1) and,
# for its slurmd and everything slurmd starts, its own hostname (a UTS namespace: unshare --uts). /etc/hosts names
# them. The machine's CPUs are split between them (CPUs=1 each on 2 cores). They share the file system (as cluster
# nodes share NFS or Lustre), so munge's socket and key and the run dirs are the same on both. Either way there are
# two partitions: `low` (the default) and `high`. A job submitted to `high` preempts (requeues) a job of `low` when
# it needs its CPUs: what a busy cluster does.
set -euo pipefail

DIR="${ART_DIFFUSION_SLURM_DIR:-/tmp/art-diffusion-slurm}"   # config, state, logs, pid files
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

NODES_FILE="$DIR/nodes"   # the node names of the running cluster, one a line (written by start)
NET="${ART_DIFFUSION_SLURM_NET:-10.77.0}"                    # the two-node cluster's /24: bridge .1, nodes .11, .12
BRIDGE=adbr0
HOSTS_TAG="# art-diffusion-slurm"                            # marks the /etc/hosts lines this script adds

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

write_config() {  # write_config NODES
    local nodes="$1" host cpus mem ctld nodelines names pidfile_line
    host="$(hostname -s)"
    cpus="$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')"
    mem="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
    mkdir -p "$DIR/state" "$DIR/spool"
    if [ "$nodes" = 1 ]; then
        ctld="$host(127.0.0.1)"
        names="$host"
        nodelines="NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN"
        pidfile_line="SlurmdPidFile=$DIR/slurmd.pid"
    else
        ctld="$host($NET.1)"
        names="adnode[1-$nodes]"
        nodelines=""
        for i in $(seq "$nodes"); do
            nodelines+="NodeName=adnode$i NodeAddr=$NET.$((10 + i)) CPUs=$(( cpus / nodes > 0 ? cpus / nodes : 1 ))"
            nodelines+=" RealMemory=$(( mem / nodes )) State=UNKNOWN"$'\n'
        done
        pidfile_line="SlurmdPidFile=$DIR/slurmd-%n.pid"
    fi
    cat >"$CONF" <<EOF
# Written by tests/slurm/cluster.sh: $nodes node(s) ($names), slurmctld on $ctld.
ClusterName=art-diffusion
SlurmctldHost=$ctld
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
$pidfile_line
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd-%n.log
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
# a node's configured CPUs may be fewer than it has (two nodes share the machine's)
SlurmdParameters=config_overrides
ReturnToService=2
# a requeued job may start again at once; killed jobs get SIGTERM, then SIGKILL after KillWait seconds
JobRequeue=1
KillWait=30
MinJobAge=600
# preemption: a job of partition high requeues a job of partition low that holds the CPUs it needs, at once (no
# GraceTime: a job that exits on its SIGTERM within a grace time ends FAILED, not requeued)
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
$nodelines
PartitionName=low Nodes=$names Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=high Nodes=$names MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
}

node_names() { cat "$NODES_FILE" 2>/dev/null || true; }
namespaced() { [ "$(wc -l <"$NODES_FILE" 2>/dev/null || echo 0)" -gt 1 ]; }
pidfile() {
    case "$1" in
        munged) echo "$DIR/munge/munged.pid" ;;
        slurmd) echo "$DIR/slurmd.pid" ;;        # the one node's
        slurmd:*) echo "$DIR/slurmd-${1#slurmd:}.pid" ;;  # a namespaced node's
        *) echo "$DIR/$1.pid" ;;
    esac
}
running() {  # a live process (not a zombie that nobody has reaped yet) has the pid of the daemon's pid file
    local pid
    [ -s "$(pidfile "$1")" ] && pid="$(cat "$(pidfile "$1")")" && kill -0 "$pid" 2>/dev/null \
        && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}
slurmds_running() {
    if namespaced; then
        for node in $(node_names); do running "slurmd:$node" || return 1; done
    else
        running slurmd
    fi
}

make_host() {  # make_host NAME INDEX: a network namespace on the bridge, with an address and an /etc/hosts line
    local name="$1" addr="$NET.$((10 + $2))"
    ip netns add "$name"
    ip link add "veth-$name" type veth peer name eth0 netns "$name"
    ip link set "veth-$name" master "$BRIDGE" up
    ip -n "$name" addr add "$addr/24" dev eth0
    ip -n "$name" link set eth0 up
    ip -n "$name" link set lo up
    echo "$addr $name $HOSTS_TAG" >>/etc/hosts
}

start_slurmd() {  # start_slurmd NAME: slurmd -N NAME inside the node's network namespace, under its own hostname
    local name="$1"
    mkdir -p "$DIR/spool/$name"
    # nsenter, not `ip netns exec`: that one also mounts a fresh /sys, without the cgroup file system slurmd needs
    nsenter --net="/run/netns/$name" unshare --uts sh -c "hostname $name && exec slurmd -f '$CONF' -c -N $name"
}

make_network() {  # make_network NODES
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for i in $(seq "$1"); do make_host "adnode$i" "$i"; done
}

remove_network() {  # whatever of the namespaces, links and /etc/hosts lines is there
    for name in $(ip netns list | awk '/^adnode[0-9]+/ {print $1}'); do
        kill_node_processes "$name"
        ip netns del "$name" 2>/dev/null || true   # its end of the veth pair goes with it
    done
    for link in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^veth-adnode[0-9]+$'); do
        ip link del "$link" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    if grep -q "$HOSTS_TAG" /etc/hosts; then
        # in place (/etc/hosts may be a mount point that cannot be replaced by a rename)
        grep -v "$HOSTS_TAG" /etc/hosts >"$DIR/hosts.tmp" || true
        cat "$DIR/hosts.tmp" >/etc/hosts && rm -f "$DIR/hosts.tmp"
    fi
}

kill_node_processes() {  # kill_node_processes NAME: every process in the node's network namespace (a crash)
    local pids
    pids="$(ip netns pids "$1" 2>/dev/null || true)"
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    for _ in $(seq 50); do [ -z "$(ip netns pids "$1" 2>/dev/null)" ] && return; sleep 0.1; done
}

wait_idle() {  # wait_idle NODE...: each node idle (or busy with jobs), or fail with the logs
    for node in "$@"; do
        for _ in $(seq 120); do
            state="$(sinfo -h -n "$node" -o %T 2>/dev/null | head -n1 || true)"
            case "$state" in
                idle|mixed|allocated|completing) log "node $node is $state"; continue 2 ;;
                down*|drain*) scontrol update NodeName="$node" State=RESUME 2>/dev/null || true ;;
            esac
            sleep 0.5
        done
        log "node $node did not become idle; see $DIR/slurmctld.log and $DIR/slurmd-$node.log"
        tail -n 20 "$DIR/slurmctld.log" "$DIR"/slurmd-*.log >&2 || true
        exit 1
    done
}

start() {  # start NODES
    local nodes="$1"
    install_packages
    mkdir -p "$DIR"
    start_munge
    if running slurmctld && slurmds_running && [ "$(node_names | wc -l)" = "$nodes" ]; then
        log "already running"
    else
        if running slurmctld || [ -s "$NODES_FILE" ]; then
            log "a cluster of $(node_names | wc -l) node(s) is running: stopping it for one of $nodes"
            stop
            start_munge
        fi
        write_config "$nodes"
        mkdir -p "$DIR/spool/$(hostname -s)"
        remove_network  # leftovers of a run that did not stop
        if [ "$nodes" = 1 ]; then
            hostname -s >"$NODES_FILE"
        else
            if ! command -v ip >/dev/null && [ "$(id -u)" = 0 ]; then
                log "installing Debian's iproute2 (ip netns, veth, bridge)"
                apt-get update -q >/dev/null
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends iproute2 >/dev/null
            fi
            command -v ip >/dev/null && command -v unshare >/dev/null && command -v nsenter >/dev/null || {
                log "two nodes need ip (iproute2), unshare and nsenter (util-linux)"; exit 1; }
            make_network "$nodes"
            for i in $(seq "$nodes"); do echo "adnode$i"; done >"$NODES_FILE"
        fi
        slurmctld -f "$CONF" -c -i   # -c: clean start (no old jobs), -i: ignore old state
        if [ "$nodes" = 1 ]; then
            slurmd -f "$CONF" -c
        else
            for node in $(node_names); do start_slurmd "$node"; done
        fi
    fi
    # shellcheck disable=SC2046
    wait_idle $(node_names)
    log "export SLURM_CONF=$CONF"
}

stop() {
    local daemons=(slurmd)
    for node in $(node_names); do daemons+=("slurmd:$node"); done
    for daemon in "${daemons[@]}" slurmctld munged; do
        if running "$daemon"; then
            pid="$(cat "$(pidfile "$daemon")")"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    done
    remove_network
    rm -f "$NODES_FILE"
    log "stopped"
}

node_down() {  # node_down NAME: as if the machine crashed (every process on it gone), and SLURM told so at once
    grep -qx "$1" "$NODES_FILE" 2>/dev/null && namespaced || { log "no namespaced node $1 is running"; exit 1; }
    kill_node_processes "$1"
    rm -f "$(pidfile "slurmd:$1")"
    # what slurmctld decides by itself after SlurmdTimeout (300 s) of silence: the node is DOWN, its jobs fail
    # (NODE_FAIL) and are requeued
    scontrol update NodeName="$1" State=DOWN Reason="cluster.sh down"
    log "node $1 is down"
}

node_up() {  # node_up NAME: the machine is back: its slurmd starts again, the node returns to service
    grep -qx "$1" "$NODES_FILE" 2>/dev/null && namespaced || { log "no namespaced node $1 is running"; exit 1; }
    running "slurmd:$1" || start_slurmd "$1"
    scontrol update NodeName="$1" State=RESUME 2>/dev/null || true
    wait_idle "$1"
}

case "${1:-}" in
    start)
        nodes=1
        if [ "${2:-}" = --nodes ]; then nodes="${3:?--nodes needs a number}"; fi
        case "$nodes" in 1|2) ;; *) echo "usage: $0 start [--nodes 1|2]" >&2; exit 2 ;; esac
        start "$nodes" ;;
    stop) stop ;;
    status) if running slurmctld && slurmds_running; then sinfo -N; else log "not running"; exit 1; fi ;;
    down) node_down "${2:?usage: $0 down NODE}" ;;
    up) node_up "${2:?usage: $0 up NODE}" ;;
    *) echo "usage: $0 start [--nodes 1|2] | stop | status | down NODE | up NODE" >&2; exit 2 ;;
esac
