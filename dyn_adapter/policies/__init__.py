"""Exit policies on cached exit logits: simulation, the geometric family, the oracle, search."""
