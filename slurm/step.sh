#!/bin/bash
# Runs one job step (the srun line of an hpcmarl sbatch script) so that preemption works:
#  - USR1/TERM sent to the batch shell (scancel --signal=USR1 --batch, or #SBATCH --signal=B:USR1@T)
#    are forwarded to srun, which forwards them to every rank; the ranks stop at the next update,
#    the lead learner writes a checkpoint and all HDF5 files are closed;
#  - hpcmarl then exits with status 75 (stopped before the end, resumable) and this script requeues
#    the job (scontrol requeue); the requeued job has the same job id, so it finds its run directory
#    (runs/<name>-<jobid>) and resumes from the checkpoint.
# A rank lost or unreachable (a node that died, froze or was cut off) ends the run with status 69 while the job
# has requeues left (runtime.max_requeues, counted by SLURM_RESTART_COUNT): it is requeued the same way and the
# requeued job resumes from the newest checkpoint. Config and code errors (exit 2 / 1) are final.
# Signals sent to the job steps directly (#SBATCH --signal=USR1@T, without B:) reach the ranks
# without this forwarding and end the same way.
set -u
"$@" &
pid=$!
trap 'echo "[hpcmarl step] $(date +%T) signal received: forwarding USR1 to the job step"; kill -USR1 "$pid" 2>/dev/null' USR1 TERM
while :; do
  wait "$pid"; rc=$?
  kill -0 "$pid" 2>/dev/null || break   # wait was interrupted by a trapped signal: keep waiting
done
echo "[hpcmarl step] $(date +%T) job step exited with status $rc (restart ${SLURM_RESTART_COUNT:-0})"
if [ -n "${SLURM_JOB_ID:-}" ] && { [ "$rc" -eq 75 ] || [ "$rc" -eq 69 ]; }; then
  if [ "$rc" -eq 69 ]; then
    echo "[hpcmarl step] a rank was lost or did not answer (a node failure): requeueing job ${SLURM_JOB_ID}"
  else
    echo "[hpcmarl step] run stopped before its end: requeueing job ${SLURM_JOB_ID}"
  fi
  scontrol requeue "${SLURM_JOB_ID}" && exit 0
fi
exit "$rc"
