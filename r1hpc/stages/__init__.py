"""The jobs of the R1 recipe, one module per stage (launched by r1hpc.pipeline or jobs/<stage>.py)."""
