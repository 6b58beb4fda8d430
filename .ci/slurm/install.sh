#!/usr/bin/env bash
# Install a single-node SLURM (controller, node daemon, client tools) and munge from Debian.
# Idempotent: does nothing when sbatch, slurmctld, slurmd and munged are already there.
# Needs root (apt-get). About 10 s on a fresh Debian 12 container.
set -euo pipefail

if command -v sbatch >/dev/null && command -v slurmctld >/dev/null \
    && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    echo "slurm: already installed (slurmd $(dpkg-query -W -f '${Version}' slurmd))"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Package lists may be missing in a fresh container; update only then (saves ~10 s otherwise).
apt-get install -y --no-install-recommends slurmd slurmctld slurm-client munge \
    || { apt-get update && apt-get install -y --no-install-recommends slurmd slurmctld slurm-client munge; }
echo "slurm: installed (slurmd $(dpkg-query -W -f '${Version}' slurmd))"
