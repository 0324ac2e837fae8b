"""The MLM output layer fused with its loss: decoder, log-softmax cross-entropy and accuracy over vocabulary chunks.

The plain form writes the (R, V) logits out whole (415 MB at W1: 5,120 rows by 20,256 pieces), reads them for the
softmax and the loss, and writes their gradient back: on a CPU the layer then waits on memory. Here a scan walks the
vocabulary `chunk` pieces at a time and keeps a running max and sum of exponentials per row (the online logsumexp);
the backward pass recomputes each chunk's logits from the saved logsumexp. Only an (R, chunk) slab ever exists.

The arithmetic is the plain form's, reassociated: the loss is logsumexp - the label's logit, the accuracy counts a
row correct when the label's logit is the row's largest (ties count, as in `losses.mlm_metrics`), and both are
averaged over the weights. `tests/test_fused_mlm.py` holds it to the plain form's loss, accuracy and gradients.
"""

import functools

import jax
import jax.numpy as jnp


def mlm_metrics(h, kernel, bias, labels, weights, *, chunk: int) -> dict:
    """{"mlm_loss", "mlm_acc"} of the logits `h @ kernel + bias`, without forming them.

    h (R, D) in the compute dtype, kernel (D, V) in the same dtype, bias (V,) float32, labels (R,) int,
    weights (R,) in {0, 1}. Products are summed in float32 whatever the compute dtype."""
    loss, acc = _fused(h, kernel, bias, labels, weights.astype(jnp.float32), chunk)
    return {"mlm_loss": loss, "mlm_acc": acc}


def _slabs(kernel, bias, chunk: int):
    """kernel (D, V) and bias (V,) cut into (C, D, chunk) and (C, chunk), the vocabulary padded to a multiple of
    `chunk` by columns whose bias is -inf: they add exp(-inf) = 0 to every sum and get no gradient."""
    d, v = kernel.shape
    pad = -v % chunk
    kernel = jnp.pad(kernel, ((0, 0), (0, pad)))
    bias = jnp.pad(bias.astype(jnp.float32), (0, pad), constant_values=-jnp.inf)
    c = (v + pad) // chunk
    return kernel.reshape(d, c, chunk).transpose(1, 0, 2), bias.reshape(c, chunk)


def _logits(h, kernel_slab, bias_slab):
    return jnp.dot(h, kernel_slab, preferred_element_type=jnp.float32) + bias_slab  # (R, chunk) float32


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _fused(h, kernel, bias, labels, weights, chunk):
    return _forward(h, kernel, bias, labels, weights, chunk)[0]


def _forward(h, kernel, bias, labels, weights, chunk):
    kernels, biases = _slabs(kernel, bias, chunk)
    rows = h.shape[0]

    def one(carry, slab):
        top, sumexp, label_logit = carry
        (kernel_slab, bias_slab), start = slab
        logits = _logits(h, kernel_slab, bias_slab)
        new_top = jnp.maximum(top, logits.max(-1))
        sumexp = sumexp * jnp.exp(top - new_top) + jnp.exp(logits - new_top[:, None]).sum(-1)
        # The label's logit read from the same slab the max is taken from, so a label that is the row's largest
        # compares equal to the max exactly.
        inside = (labels >= start) & (labels < start + chunk)
        here = jnp.take_along_axis(logits, jnp.clip(labels - start, 0, chunk - 1)[:, None], axis=-1)[:, 0]
        return (new_top, sumexp, jnp.where(inside, here, label_logit)), None

    init = (jnp.full((rows,), -jnp.inf), jnp.zeros((rows,)), jnp.zeros((rows,)))
    starts = jnp.arange(kernels.shape[0]) * chunk
    (top, sumexp, label_logit), _ = jax.lax.scan(one, init, ((kernels, biases), starts))
    lse = top + jnp.log(sumexp)
    total = jnp.maximum(weights.sum(), 1.0)
    loss = ((lse - label_logit) * weights).sum() / total
    acc = ((label_logit >= top).astype(jnp.float32) * weights).sum() / total
    return (loss, acc), (h, kernel, bias, labels, weights, lse, total)


def _backward(chunk, saved, grads):
    h, kernel, bias, labels, weights, lse, total = saved
    scale = weights * grads[0] / total  # d loss / d (cross-entropy of a row); the accuracy has no gradient
    kernels, biases = _slabs(kernel, bias, chunk)

    def one(dh, slab):
        kernel_slab, bias_slab = slab
        # softmax * scale; the label's -scale is added below, outside the scan
        d = (jnp.exp(_logits(h, kernel_slab, bias_slab) - lse[:, None]) * scale[:, None])
        dn = d.astype(h.dtype)
        dh = dh + jnp.dot(dn, kernel_slab.T, preferred_element_type=jnp.float32)
        return dh, (jnp.dot(h.T, dn, preferred_element_type=jnp.float32), d.sum(0))

    dh, (dkernels, dbiases) = jax.lax.scan(one, jnp.zeros(h.shape, jnp.float32), (kernels, biases))
    d, v = kernel.shape
    dkernel = dkernels.transpose(1, 0, 2).reshape(d, -1)[:, :v]
    dbias = dbiases.reshape(-1)[:v]
    # The label term of d(lse - label_logit): -scale at each row's label.
    label_columns = kernel.T[labels].astype(jnp.float32)  # (R, D)
    dh = dh - scale[:, None] * label_columns
    dkernel = dkernel.at[:, labels].add(-(h.astype(jnp.float32) * scale[:, None]).T)
    dbias = dbias.at[labels].add(-scale)
    return dh.astype(h.dtype), dkernel.astype(kernel.dtype), dbias.astype(bias.dtype), None, None


_fused.defvjp(_forward, _backward)
