"""r1hpc: the DeepSeek-R1 training recipe (GRPO, rejection sampling, SFT, distillation, eval) as Slurm batch jobs."""
