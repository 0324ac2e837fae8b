"""MLM and NSP losses and accuracies as pure functions of (logits, labels, weights).

The MLM loss is the cross-entropy averaged over real predictions (weight 1), the NSP loss the mean over the
batch, and the pretraining loss their sum, as in the book.
"""

import jax.numpy as jnp
import optax


def mlm_metrics(logits, labels, weights) -> dict:
    """logits (B, P, V), labels (B, P) int, weights (B, P) in {0, 1}."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)  # (B, P)
    total = jnp.maximum(weights.sum(), 1.0)
    # Correct when the label's logit is the largest (ties count as correct): XLA:CPU computes max and a
    # gather far faster than argmax over V.
    label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    correct = (label_logit >= logits.max(-1)).astype(jnp.float32)
    return {"mlm_loss": (ce * weights).sum() / total, "mlm_acc": (correct * weights).sum() / total}


def nsp_metrics(logits, labels) -> dict:
    """logits (B, 2), labels (B,) int."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    return {"nsp_loss": ce.mean(), "nsp_acc": (logits.argmax(-1) == labels).astype(jnp.float32).mean()}


def pretraining_metrics(mlm_logits, nsp_logits, batch, *, with_nsp: bool = True) -> dict:
    """All metrics; the loss is MLM + NSP (or SOP), or MLM alone for the MLM-only objective."""
    m = mlm_metrics(mlm_logits, batch["masked_ids"], batch["masked_weights"])
    if with_nsp:
        m |= nsp_metrics(nsp_logits, batch["nsp_labels"])
    m["loss"] = m["mlm_loss"] + m["nsp_loss"] if with_nsp else m["mlm_loss"]
    return m
