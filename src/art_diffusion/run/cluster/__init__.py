"""Beyond one process: DDP ranks that join their job's run dir (ddp), SLURM jobs that come back after a
preemption or a time limit (requeue)."""
