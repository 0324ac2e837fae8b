"""The BERT encoder and its pretraining heads (bert), their losses (losses), and what a config costs in
closed form (sizes)."""
