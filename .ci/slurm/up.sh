#!/usr/bin/env bash
# Brings up a one-node Slurm on this machine (slurmctld + slurmd + a munged of its own), as root,
# without systemd: the config is .ci/slurm/slurm.conf and gres.conf, rendered into the runtime
# folder $NEURAL_STYLE_SLURM_DIR (default /tmp/neural-style-slurm). Idempotent: a daemon that
# already answers is left as it is; what this script starts, .ci/slurm/down.sh stops.
# Installs Debian's slurm-wlm daemons and munge when they are missing.
# Prints `export SLURM_CONF=...` on stdout (eval it); progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
run="${NEURAL_STYLE_SLURM_DIR:-/tmp/neural-style-slurm}"
started=$(date +%s%3N)
say() { echo "slurm up: $*" >&2; }
secs() { printf '%d.%01d' $(($1 / 1000)) $(($1 % 1000 / 100)); }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurmctld, slurmd, slurm-client and munge (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends slurmctld slurmd slurm-client munge >&2
fi
installed=$(date +%s%3N)

mkdir -p "$run/state" "$run/spool" "$run/munge" "$run/fake-gpu"
touch "$run"/fake-gpu/nvidia{0..7}
chmod 700 "$run/munge"
for f in slurm.conf gres.conf; do
    sed "s|@RUN@|$run|g" "$here/$f" >"$run/$f.new" && mv "$run/$f.new" "$run/$f"
done
export SLURM_CONF="$run/slurm.conf"
socket="$run/munge/munge.socket.2"

# munged with a key of its own (a fresh random one the first time).
if ! munge -S "$socket" -n </dev/null 2>/dev/null | unmunge -S "$socket" >/dev/null 2>&1; then
    [ -s "$run/munge/munge.key" ] || { head -c 1024 /dev/urandom >"$run/munge/munge.key.new" && chmod 600 "$run/munge/munge.key.new" && mv "$run/munge/munge.key.new" "$run/munge/munge.key"; }
    # --force: munged refuses to run as root otherwise (CI is root).
    munged --force --socket="$socket" --key-file="$run/munge/munge.key" --pid-file="$run/munge/munged.pid" \
        --log-file="$run/munge/munged.log" --seed-file="$run/munge/munged.seed"
    touch "$run/started-munged"
    say "munged started (pid $(cat "$run/munge/munged.pid"))"
fi

wait_for() { # seconds, description, command...
    local limit=$1 what=$2; shift 2
    for _ in $(seq $((limit * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    say "error: $what did not come up within ${limit}s; logs in $run"; tail -n 20 "$run"/*.log >&2 || true; exit 1
}

if ! scontrol ping 2>/dev/null | grep -q "UP"; then
    # -i: start even where an earlier run's saved state cannot be read.
    slurmctld -i -f "$SLURM_CONF"
    touch "$run/started-slurmctld"
    wait_for 30 slurmctld sh -c 'scontrol ping | grep -q UP'
    say "slurmctld started (pid $(cat "$run/slurmctld.pid"))"
fi
if ! [ -s "$run/slurmd.pid" ] || ! kill -0 "$(cat "$run/slurmd.pid")" 2>/dev/null; then
    slurmd -f "$SLURM_CONF" -N localhost
    touch "$run/started-slurmd"
    wait_for 10 "slurmd's pid file" test -s "$run/slurmd.pid"
    say "slurmd started (pid $(cat "$run/slurmd.pid"))"
fi
# A node left DOWN or DRAINED by an earlier run (killed daemons) is put back into service.
node_ready() { sinfo -h -N -n localhost -o %t | grep -Eq '^(idle|mix|alloc)$'; }
if ! node_ready; then
    scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
fi
wait_for 30 "the node localhost" node_ready
done_at=$(date +%s%3N)
say "$(sinfo -h -N -o '%N %t %c CPUs %G' | head -1); bring-up took $(secs $((done_at - started))) s (of which installing $(secs $((installed - started))) s)"
echo "export SLURM_CONF=$SLURM_CONF"
