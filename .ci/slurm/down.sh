#!/usr/bin/env bash
# Stops what .ci/slurm/up.sh started (slurmd, slurmctld, munged: those it recorded as started),
# cancelling any job still queued or running first. Leaves the runtime folder (logs) in place.
set -uo pipefail
run="${NEURAL_STYLE_SLURM_DIR:-/tmp/neural-style-slurm}"
export SLURM_CONF="$run/slurm.conf"
say() { echo "slurm down: $*" >&2; }
[ -f "$run/started-slurmctld" ] && scancel --full --quiet --user=root 2>/dev/null
stop() { # name, pid file
    local name=$1 pidfile=$2 pid
    [ -f "$run/started-$name" ] || return 0
    if [ -s "$pidfile" ] && pid=$(cat "$pidfile") && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && { say "$name (pid $pid) ignored SIGTERM for 10 s: SIGKILL"; kill -KILL "$pid"; }
        say "$name (pid $pid) stopped"
    fi
    rm -f "$run/started-$name"
}
stop slurmd "$run/slurmd.pid"
stop slurmctld "$run/slurmctld.pid"
stop munged "$run/munge/munged.pid"
exit 0
