"""Pretraining: the optimizer (optim), device meshes (sharding), the pure train step and the loop (train),
checkpoints (checkpoint), what a run shows (report), and `jaxbert plan` (plan)."""
