#!/usr/bin/env bash
# Stop slurmd, slurmctld and munged by the pids in their pid files, and wait for each to exit.
set -uo pipefail

stop() { # name pidfile
    local name=$1 pidfile=$2 pid
    [[ -s "$pidfile" ]] || { echo "slurm: $name not running (no $pidfile)"; return 0; }
    pid=$(cat "$pidfile")
    # A stale pid file may name a pid reused by another program: check the name first.
    if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]]; then
        echo "slurm: $name not running (stale $pidfile)"
        rm -f "$pidfile"
        return 0
    fi
    if kill -TERM "$pid" 2>/dev/null; then
        # slurmctld saves its state first: allow it some seconds.
        for _ in $(seq 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "slurm: $name ($pid) ignored SIGTERM for 30 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    rm -f "$pidfile"
    echo "slurm: stopped $name ($pid)"
}

stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
stop munged /run/munge/munged.pid
