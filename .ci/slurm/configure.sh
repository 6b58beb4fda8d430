#!/usr/bin/env bash
# Write /etc/slurm/slurm.conf and gres.conf for a one-node cluster on this machine.
#
# The node has the machine's real CPUs, 90 % of its memory and two *fake* GPUs (GRES backed by
# /dev/null and /dev/zero, which nothing opens): a `gpu=1` job is scheduled with --gpus=1 and
# sees CUDA_VISIBLE_DEVICES=0 or 1 while it trains on the CPU. No cgroups and no accounting
# database: the Snakemake profile must use `slurm-status-command: squeue`, and MinJobAge keeps
# finished jobs visible to squeue.
set -euo pipefail

SLURM_ETC=${SLURM_ETC:-/etc/slurm}
host=$(hostname)
# slurmd -C prints what the node really has: "NodeName=vm CPUs=2 ... RealMemory=24105"
hw=$(slurmd -C | head -1)
cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
memory=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
memory=$((memory * 9 / 10)) # a little under the real value, or slurmd drains the node

mkdir -p "$SLURM_ETC" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat >"$SLURM_ETC/slurm.conf" <<CONF
# Written by .ci/slurm/configure.sh: a single-node test cluster, not for production.
ClusterName=cifarlab-ci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroups in a container: track processes by parentage, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Schedule cores and memory separately, so jobs run side by side.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job with no memory request takes the whole node.
DefMemPerCPU=1000
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
# No accounting database (sacct does not work; use squeue for status).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Keep finished jobs visible to squeue for 5 minutes (the executor plugin polls squeue).
MinJobAge=300
# Seconds between SIGTERM and SIGKILL when a job is cancelled, preempted or out of time:
# enough for training to write its checkpoint.
KillWait=10
JobRequeue=1
ReturnToService=2
MpiDefault=none
GresTypes=gpu
NodeName=$host CPUs=$cpus RealMemory=$memory Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

# A count-only gres line drains the node: each fake GPU needs a device file.
cat >"$SLURM_ETC/gres.conf" <<CONF
AutoDetect=off
NodeName=$host Name=gpu File=/dev/null
NodeName=$host Name=gpu File=/dev/zero
CONF
echo "slurm: configured node $host with $cpus CPUs, $memory MB, 2 fake GPUs"
