#!/usr/bin/env bash
# Start munged, slurmctld and slurmd on this machine and wait until the node is idle.
#   .ci/slurm/start.sh            # install (if needed), configure, start
# Stop them with .ci/slurm/stop.sh. Needs root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

"$here/install.sh"
"$here/configure.sh"

running() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; } # pidfile

mkdir -p /run/munge && chown munge:munge /run/munge
running /run/munge/munged.pid || su -s /bin/sh munge -c /usr/sbin/munged
# A leftover state from an earlier start would bring back its jobs: start clean (-c).
running /run/slurmctld.pid || slurmctld -c
running /run/slurmd.pid || slurmd

# Wait for the node, on the clock: a client call to a dead controller itself hangs for seconds.
deadline=$((SECONDS + 60))
started=$SECONDS
while ((SECONDS < deadline)); do
    state=$(timeout 5 sinfo -h -o %T 2>/dev/null || true)
    if [[ "$state" == idle* ]]; then
        echo "slurm: node is idle"
        sinfo
        exit 0
    fi
    sleep 1
    # After a few seconds to daemonize and write pid files, a daemon missing is an error.
    if ((SECONDS > started + 5)); then
        for daemon in /run/munge/munged.pid /run/slurmctld.pid /run/slurmd.pid; do
            running "$daemon" || { echo "slurm: $daemon: not running" >&2; break 2; }
        done
    fi
done
echo "slurm: the node is not idle (state: '${state:-none}'); the end of the logs:" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
