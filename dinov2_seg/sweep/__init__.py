"""Ablation sweeps: a grid of config overrides times seeds, run locally or
on Slurm (submitit) and resumable (``tools/sweep.py``), and the comparison
of runs as a table and plots (``tools/compare_runs.py``)."""
