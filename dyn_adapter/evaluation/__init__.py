"""What the evaluate stage measures and draws: wall-clock ratios, plots, the model card."""
