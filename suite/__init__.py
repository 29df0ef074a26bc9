"""dc-bench run: every transfer task for one or more checkpoints, as processes, containers or Slurm jobs."""
