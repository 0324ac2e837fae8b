"""The optimizer: optional global-norm clipping, then Adam, AdamW or LAMB on a warmup + decay schedule.

Weight decay, when on, applies to matrices only: biases and LayerNorm scales are exempt, as in Google's BERT.
LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning") is AdamW whose update of each tensor is
rescaled to the learning rate times that tensor's norm (its trust ratio), for large batches. With
`model.scan_layers` a parameter under `layers` stacks every layer's tensor on a leading axis; the trust ratio is
then taken per layer, so both layouts get the same update.
"""

import jax
import jax.numpy as jnp
import optax
from jax.tree_util import DictKey, SequenceKey

from jaxbert.config import OptimConfig


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to the peak over `warmup_steps`, then constant, linear or cosine decay to 0 at the
    end, or (wsd) the peak held until the last `cooldown` share of the remaining steps, then linear to 0."""
    warmup = max(cfg.warmup_steps, 0)
    decay_steps = max(total_steps - warmup, 1)
    cool = max(round(cfg.cooldown * decay_steps), 1)
    after = {"constant": lambda: optax.constant_schedule(cfg.learning_rate),
             "linear": lambda: optax.linear_schedule(cfg.learning_rate, 0.0, decay_steps),
             "cosine": lambda: optax.cosine_decay_schedule(cfg.learning_rate, decay_steps),
             "wsd": lambda: optax.linear_schedule(cfg.learning_rate, 0.0, cool, transition_begin=decay_steps - cool),
             }[cfg.schedule]()
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.learning_rate, warmup), after], [warmup])


def _names(path) -> list:
    return [k.key if isinstance(k, DictKey) else k.idx for k in path if isinstance(k, (DictKey, SequenceKey))]


def _decays(path, _) -> bool:
    """Kernels and embedding tables decay; biases and LayerNorm scales do not."""
    return _names(path)[-1] not in ("bias", "scale")


def _stacked(path) -> bool:
    """A scan_layers parameter: under `layers` with no layer index after it."""
    names = _names(path)
    return "layers" in names and not isinstance(names[names.index("layers") + 1], int)


def scale_by_trust_ratio() -> optax.GradientTransformation:
    """optax.scale_by_trust_ratio, per layer for stacked parameters: update * |param| / |update|, 1 where
    either norm is 0."""

    def update_fn(updates, state, params):
        def scale(path, u, p):
            axes = tuple(range(1, u.ndim)) if _stacked(path) else None
            p_norm = jnp.sqrt(jnp.sum(jnp.square(p), axis=axes, keepdims=axes is not None))
            u_norm = jnp.sqrt(jnp.sum(jnp.square(u), axis=axes, keepdims=axes is not None))
            ratio = jnp.where((p_norm == 0) | (u_norm == 0), 1.0, p_norm / u_norm)
            return (u * ratio).astype(u.dtype)

        return jax.tree_util.tree_map_with_path(scale, updates, params), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    lr = schedule(cfg, total_steps)
    decay_mask = lambda params: jax.tree_util.tree_map_with_path(_decays, params)
    if cfg.algorithm == "lamb":  # optax.lamb's chain, with the trust ratio above
        opt = optax.chain(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
                          optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask), scale_by_trust_ratio(),
                          optax.scale_by_learning_rate(lr))
    elif cfg.weight_decay > 0:
        opt = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask)
    else:
        opt = optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt) if cfg.clip_norm > 0 else opt
