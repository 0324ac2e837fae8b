"""jaxbert: BERT pretraining (masked language modelling + next sentence prediction) in JAX/Flax NNX.

    import jaxbert
    enc = jaxbert.load("runs/d2l-tiny")     # a run written by `jaxbert pretrain`
    enc.encode("a crane is flying")          # (1, 6, hidden) contextual vectors, <cls> first
"""

__version__ = "0.1.0"


def load(run_dir):
    """Load a pretraining run for encoding (see `jaxbert.encode.Encoder`)."""
    from jaxbert.encode import load as _load  # keeps `import jaxbert` free of JAX start-up cost

    return _load(run_dir)
