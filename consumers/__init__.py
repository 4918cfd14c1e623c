"""One module per service: its decide/evolve logic and nothing else."""
