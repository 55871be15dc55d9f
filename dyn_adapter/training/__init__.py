"""Training: the epoch loops, the head cache, loss-weight schedules, sparsity and resume."""
