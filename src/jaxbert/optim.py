"""The optimizer: optional global-norm clipping, then Adam, AdamW or LAMB on a warmup + decay schedule.

Weight decay, when on, applies to matrices only (ndim >= 2): biases and LayerNorm scales are exempt, as in
Google's BERT. LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning") is AdamW whose update of
each tensor is rescaled to the learning rate times that tensor's norm (its trust ratio), for large batches.
"""

import jax
import optax

from jaxbert.config import OptimConfig


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to the peak over `warmup_steps`, then constant, linear or cosine decay to 0 at the
    end."""
    warmup = max(cfg.warmup_steps, 0)
    decay_steps = max(total_steps - warmup, 1)
    after = {"constant": lambda: optax.constant_schedule(cfg.learning_rate),
             "linear": lambda: optax.linear_schedule(cfg.learning_rate, 0.0, decay_steps),
             "cosine": lambda: optax.cosine_decay_schedule(cfg.learning_rate, decay_steps)}[cfg.schedule]()
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.learning_rate, warmup), after], [warmup])


def optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    lr = schedule(cfg, total_steps)
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    if cfg.algorithm == "lamb":
        opt = optax.lamb(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)
    elif cfg.weight_decay > 0:
        opt = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)
    else:
        opt = optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt) if cfg.clip_norm > 0 else opt
