"""Training, evaluation, sampling and checkpoints for stages and pipelines."""
