"""Training: the loop, distribution over processes, the iteration sampler, the schedule, checkpoints."""
