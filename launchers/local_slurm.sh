#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for trying the Slurm launcher on a laptop or
# in CI (the test suite's `slurm_cluster` fixture runs it). Needs root and the Debian/Ubuntu
# packages `slurmctld slurmd slurm-client munge` (+ `slurmdbd mariadb-server` for accounting).
#
#   launchers/local_slurm.sh start STATE_DIR [--accounting]   # prints: export SLURM_CONF=...
#   eval "$(launchers/local_slurm.sh start /tmp/slurm)"; optmodel hydra/launcher=slurm ...
#   launchers/local_slurm.sh stop STATE_DIR                   # stops every daemon it started
#
# No systemd, no cgroups: munged runs as the munge user, slurmctld / slurmd (and mariadbd /
# slurmdbd) run in the foreground in the background of this script, with their config,
# state, logs and sockets in STATE_DIR; their pids go to STATE_DIR/pids, which `stop` kills.
# Nothing outside STATE_DIR is written, so it runs beside a site's own munge / Slurm.
set -euo pipefail

usage() { echo "usage: $0 start STATE_DIR [--accounting] | stop STATE_DIR" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
cmd=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
accounting=0
[[ ${3:-} == --accounting ]] && accounting=1
wait_s=${LOCAL_SLURM_WAIT_S:-60}

die() { echo "local_slurm: $*" >&2; exit 1; }

stop() {
    [[ -f $dir/pids ]] || return 0
    # Jobs first (their steps are children of slurmd), then the daemons, newest first.
    [[ -f $dir/slurm.conf ]] && SLURM_CONF=$dir/slurm.conf timeout 10 scancel --full --quiet -u root 2>/dev/null || true
    tac "$dir/pids" | while read -r name pid; do
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -KILL "$pid" 2>/dev/null; then echo "local_slurm: $name ($pid) did not stop on TERM: killed" >&2; fi
    done
    rm -f "$dir/pids"
}

# Bounded wait for a condition (a command), polling; the daemons' logs on failure. The
# daemon started last must stay alive meanwhile.
await() {
    local what=$1; shift
    local deadline=$((SECONDS + wait_s))
    local last; last=$(tail -n 1 "$dir/pids" | cut -d' ' -f2)
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$last" 2>/dev/null || (( SECONDS > deadline )); then
            tail -n 20 "$dir"/log/* >&2 2>/dev/null || true
            die "$what not ready after ${wait_s} s (logs in $dir/log)"
        fi
        sleep 0.2
    done
}

started() { echo "$1 $2" >> "$dir/pids"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start() {
    [[ $(id -u) == 0 ]] || die "needs root (slurmd starts jobs as their user)"
    for bin in munged slurmctld slurmd sinfo; do command -v "$bin" >/dev/null || die "$bin not installed"; done
    if (( accounting )); then
        for bin in slurmdbd mariadbd mariadb-install-db; do command -v "$bin" >/dev/null || die "$bin not installed"; done
    fi
    [[ -f $dir/pids ]] && stop
    trap 'stop' EXIT  # a failed start leaves nothing running
    mkdir -p "$dir"/{munge,ctld,spool,log,db}
    chmod 0755 "$dir"  # the munge user must reach its dir inside (mktemp -d makes it 0700)
    local host; host=$(hostname -s)
    local cpus; cpus=$(nproc)
    (( cpus < 2 )) && cpus=2  # a 2-rank job fits; slurmd takes the configured count (config_overrides)
    local mem_mb; mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)

    # munge: its own key and socket, run as the munge user (it refuses root-owned state).
    chown munge:munge "$dir/munge"; chmod 0755 "$dir/munge"  # clients must reach the socket
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chown munge:munge "$dir/munge/munge.key"; chmod 0400 "$dir/munge/munge.key"
    setpriv --reuid=munge --regid=munge --init-groups munged --foreground --force \
        --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed" >"$dir/log/munged.out" 2>&1 &
    started munged $!
    await munged test -S "$dir/munge/munge.socket"

    local ctld_port d_port dbd_port db_port
    ctld_port=$(free_port); d_port=$(free_port); dbd_port=$(free_port); db_port=$(free_port)
    local acct="AccountingStorageType=accounting_storage/none"
    if (( accounting )); then
        mariadb-install-db --no-defaults --datadir="$dir/db" --user=root --auth-root-authentication-method=normal \
            --skip-test-db >"$dir/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $dir/log)"
        mariadbd --no-defaults --datadir="$dir/db" --socket="$dir/mysql.sock" --port="$db_port" \
            --bind-address=127.0.0.1 --user=root --skip-grant-tables --pid-file="$dir/mariadb.pid" \
            --log-error="$dir/log/mariadb.log" --innodb-buffer-pool-size=32M >"$dir/log/mariadbd.out" 2>&1 &
        started mariadbd $!
        await mariadbd test -S "$dir/mysql.sock"
        cat >"$dir/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=root
StorageLoc=slurm_acct_db
LogFile=$dir/log/slurmdbd.log
PidFile=$dir/slurmdbd.pid
EOF
        chmod 0600 "$dir/slurmdbd.conf"
        SLURM_CONF=$dir/slurm.conf slurmdbd -D >"$dir/log/slurmdbd.out" 2>&1 &
        started slurmdbd $!
        await slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/$dbd_port"
        acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
AccountingStoragePass=$dir/munge/munge.socket
JobAcctGatherType=jobacct_gather/linux"
    fi

    cat >"$dir/slurm.conf" <<EOF
ClusterName=optmodel
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
JobCompType=jobcomp/none
$acct
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$dir/slurm.conf
    if (( accounting )); then
        await "slurmdbd (sacctmgr)" sacctmgr -i add cluster optmodel
    fi
    slurmctld -D -i -f "$SLURM_CONF" >"$dir/log/slurmctld.out" 2>&1 &
    started slurmctld $!
    await slurmctld scontrol ping
    slurmd -D -f "$SLURM_CONF" >"$dir/log/slurmd.out" 2>&1 &
    started slurmd $!
    await "node $host" bash -c "sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'"
    if (( accounting )); then
        await "accounting (sacct)" sacct -n -X -a -S now
    fi
    trap - EXIT
    echo "export SLURM_CONF=$dir/slurm.conf"
}

case $cmd in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
