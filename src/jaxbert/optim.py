"""The optimizer: optional global-norm clipping, then Adam (or AdamW) on a warmup + decay schedule.

Weight decay, when on, applies to matrices only (ndim >= 2): biases and LayerNorm scales are exempt, as in
Google's BERT.
"""

import jax
import optax

from jaxbert.config import OptimConfig


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to the peak over `warmup_steps`, then constant or linear decay to 0 at the end."""
    warmup = max(cfg.warmup_steps, 0)
    after = (optax.constant_schedule(cfg.learning_rate) if cfg.schedule == "constant"
             else optax.linear_schedule(cfg.learning_rate, 0.0, max(total_steps - warmup, 1)))
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.learning_rate, warmup), after], [warmup])


def optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    lr = schedule(cfg, total_steps)
    if cfg.weight_decay > 0:
        decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
        adam = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)
    else:
        adam = optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adam) if cfg.clip_norm > 0 else adam
