"""The whole BERT in one file: embeddings, post-LayerNorm encoder, pooler, MLM and NSP heads (Flax NNX).

The architecture is `transformers.BertForPreTraining`'s, parameter for parameter, so a run exports to it
exactly; the book's d2l-tiny is this model with ReLU and an untied MLM decoder. Module names follow the
Hugging Face ones (`embeddings.word_embeddings`, `layers[i].attention.query`, `mlm.transform`, ...).

Shape legend:
    B batch   T sequence   D hidden   N heads   H head dim (D = N*H)   F FFN   V vocab   P predictions
"""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbert.config import ModelConfig

ACTIVATIONS = {"relu": jax.nn.relu, "gelu": lambda x: jax.nn.gelu(x, approximate=False)}  # HF "gelu" is erf


@jax.custom_vjp
def mixed_matmul(x, w):
    """x @ w for 2-D operands in a narrow compute dtype (bfloat16), as a float32 result: narrow products summed in
    float32 on the forward pass and on both backward matmuls. XLA:CPU runs a bf16 matmul with a float32 result
    several times faster than one with a bf16 result (docs/performance.md)."""
    return jnp.dot(x, w, preferred_element_type=jnp.float32)


def _mixed_matmul_fwd(x, w):
    return mixed_matmul(x, w), (x, w)


def _mixed_matmul_bwd(res, g):
    x, w = res
    g = g.astype(x.dtype)
    return (jnp.dot(g, w.T, preferred_element_type=jnp.float32).astype(x.dtype),
            jnp.dot(x.T, g, preferred_element_type=jnp.float32).astype(w.dtype))


mixed_matmul.defvjp(_mixed_matmul_fwd, _mixed_matmul_bwd)


def _mixed_dot_general(x, w, dimension_numbers, precision=None, preferred_element_type=None, out_sharding=None):
    """nnx.Linear's matmul in a narrow compute dtype: `mixed_matmul`, rounded back to that dtype."""
    assert dimension_numbers == (((1,), (0,)), ((), ())), dimension_numbers  # 2-D, as _flat calls it
    return mixed_matmul(x, w).astype(x.dtype)


def cpu_workaround(dtype) -> bool:
    """Whether narrow matmuls go through `mixed_matmul`: on CPUs only. GPUs and TPUs run a plain bf16 dot, which
    their matmul units sum in float32 anyway, and a forced float32 result would double its output bytes."""
    return jnp.dtype(dtype) != jnp.float32 and jax.default_backend() == "cpu"


def _dense(cfg: ModelConfig, d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, kernel_init=nnx.initializers.normal(cfg.initializer_range), rngs=rngs,
                      dtype=jnp.dtype(cfg.dtype),  # the compute dtype; parameters stay float32
                      **({"dot_general": _mixed_dot_general} if cpu_workaround(cfg.dtype) else {}))


def _flat(dense: nnx.Linear, x):
    """`dense(x)` as one 2-D matmul over all leading axes: XLA:CPU differentiates (B*T, D) @ (D, F) about
    twice as fast as (B, T, D) @ (D, F) (2.2x and 2.8x at d2l-tiny's FFN and MLM decoder shapes, measured by a
    benchmark since folded away)."""
    return dense(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)


def _layer_norm(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, rngs=rngs, dtype=jnp.dtype(cfg.dtype))


class Dropout(nnx.Module):
    """Inverted dropout that draws 16 random bits per element, two from each 32-bit threefry word: half the
    random bits nnx.Dropout draws (they are a sixth of a d2l-tiny CPU step), the same bits whatever the sharding
    (jax_threefry_partitionable). An element is kept when its 16 bits reach round(rate * 2**16), so the keep
    probability is exact to 2**-17, and kept values are scaled by the inverse of that probability."""

    def __init__(self, rate: float):
        self.rate = rate

    def __call__(self, x, *, deterministic: bool, rngs: nnx.Rngs | None):
        if deterministic or self.rate == 0.0:
            return x
        drop = round(self.rate * 65536)
        if drop >= 65536:
            return jnp.zeros_like(x)
        half = (x.shape[-1] + 1) // 2
        words = jax.random.bits(rngs.dropout(), (*x.shape[:-1], half), jnp.uint32)
        bits = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(*x.shape[:-1], 2 * half)[..., :x.shape[-1]]
        return jnp.where(bits >= drop, x * (65536 / (65536 - drop)), 0).astype(x.dtype)


class Embeddings(nnx.Module):
    """Token + segment + learned position embeddings, then LayerNorm and dropout."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        init, dtype = nnx.initializers.normal(cfg.initializer_range), jnp.dtype(cfg.dtype)
        self.word_embeddings = nnx.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=init, rngs=rngs,
                                         dtype=dtype)
        self.position_embeddings = nnx.Embed(cfg.max_position_embeddings, cfg.hidden_size, embedding_init=init,
                                             rngs=rngs, dtype=dtype)
        self.token_type_embeddings = nnx.Embed(cfg.type_vocab_size, cfg.hidden_size, embedding_init=init,
                                               rngs=rngs, dtype=dtype)
        self.layer_norm = _layer_norm(cfg, rngs)
        self.dropout = Dropout(cfg.hidden_dropout_prob)

    def __call__(self, input_ids, segment_ids, *, deterministic: bool, rngs: nnx.Rngs | None):
        t = input_ids.shape[1]
        x = (self.word_embeddings(input_ids) + self.token_type_embeddings(segment_ids)
             + self.position_embeddings(jnp.arange(t))[None])  # (B, T, D)
        return self.dropout(self.layer_norm(x), deterministic=deterministic, rngs=rngs)


class Attention(nnx.Module):
    """Multi-head self-attention over the first `valid_len` keys, then dense, dropout, residual, LayerNorm."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.query, self.key, self.value = (_dense(cfg, d, d, rngs) for _ in range(3))
        self.output = _dense(cfg, d, d, rngs)
        self.layer_norm = _layer_norm(cfg, rngs)
        self.attention_dropout = Dropout(cfg.attention_probs_dropout_prob)
        self.dropout = Dropout(cfg.hidden_dropout_prob)

    # None: `jax.nn.dot_product_attention` (cuDNN's fused kernels where they apply) on GPUs and TPUs whenever no
    # attention dropout is drawn, the written-out form on CPUs (where XLA runs it as fast); True or False force one.
    fused: bool | None = None

    def __call__(self, x, key_mask, *, deterministic: bool, rngs: nnx.Rngs | None):
        b, t, _ = x.shape
        split = lambda y: y.reshape(b, t, self.num_heads, self.head_dim)  # (B, T, D) -> (B, T, N, H)
        q, k, v = split(_flat(self.query, x)), split(_flat(self.key, x)), split(_flat(self.value, x))
        fused = jax.default_backend() != "cpu" if self.fused is None else self.fused
        if fused and (deterministic or self.attention_dropout.rate == 0.0):
            # The same function: scores scaled by 1/sqrt(H), masked keys out, softmax in float32.
            context = jax.nn.dot_product_attention(q, k, v, mask=key_mask[:, None, None, :]).reshape(b, t, -1)
        else:
            context = self._written_out(q, k, v, key_mask, deterministic=deterministic, rngs=rngs)
        out = self.dropout(_flat(self.output, context), deterministic=deterministic, rngs=rngs)
        return self.layer_norm(out + x)

    def _written_out(self, q, k, v, key_mask, *, deterministic: bool, rngs: nnx.Rngs | None):
        b, t = q.shape[:2]
        # Products in the compute dtype summed in float32 (bf16 results are XLA:CPU's slow path, as in
        # mixed_matmul); the softmax runs in float32 whatever the dtype.
        scores = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32)  # (B, N, T, T)
        scores = scores / jnp.sqrt(jnp.float32(self.head_dim))
        scores = jnp.where(key_mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
        probs = self.attention_dropout(probs, deterministic=deterministic, rngs=rngs)
        context = jnp.einsum("bnts,bsnh->btnh", probs, v, preferred_element_type=jnp.float32)
        return context.astype(q.dtype).reshape(b, t, -1)  # (B, T, D)


class Layer(nnx.Module):
    """One post-LayerNorm transformer block: attention, then the position-wise FFN with its own residual."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.attention = Attention(cfg, rngs)
        self.intermediate = _dense(cfg, cfg.hidden_size, cfg.intermediate_size, rngs)  # D -> F
        self.output = _dense(cfg, cfg.intermediate_size, cfg.hidden_size, rngs)  # F -> D
        self.layer_norm = _layer_norm(cfg, rngs)
        self.dropout = Dropout(cfg.hidden_dropout_prob)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def __call__(self, x, key_mask, *, deterministic: bool, rngs: nnx.Rngs | None):
        x = self.attention(x, key_mask, deterministic=deterministic, rngs=rngs)
        y = _flat(self.output, self.act(_flat(self.intermediate, x)))
        return self.layer_norm(self.dropout(y, deterministic=deterministic, rngs=rngs) + x)


class MLMHead(nnx.Module):
    """dense -> activation -> LayerNorm -> decoder to V, run only on the P gathered positions."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.transform = _dense(cfg, cfg.hidden_size, cfg.hidden_size, rngs)
        self.layer_norm = _layer_norm(cfg, rngs)
        self.act = ACTIVATIONS[cfg.hidden_act]
        # A tied decoder reuses the word embeddings (passed in at call time); an untied one owns its (D, V).
        self.decoder = None if cfg.tie_word_embeddings else nnx.Param(
            nnx.initializers.normal(cfg.initializer_range)(rngs.params(), (cfg.hidden_size, cfg.vocab_size)))
        self.bias = nnx.Param(jnp.zeros((cfg.vocab_size,)))

    def hidden(self, h):
        """(B, P, D) -> the decoder's input (B*P, D), 2-D as in _flat."""
        return self.layer_norm(self.act(self.transform(h.reshape(-1, h.shape[-1]))))

    def kernel(self, word_embeddings, dtype):
        """The decoder's (D, V) in the compute dtype."""
        return (word_embeddings.T if self.decoder is None else self.decoder[...]).astype(dtype)

    def __call__(self, h, word_embeddings):
        b, p, _ = h.shape
        h = self.hidden(h)
        kernel = self.kernel(word_embeddings, h.dtype)
        logits = mixed_matmul(h, kernel) if cpu_workaround(h.dtype) else jnp.dot(
            h, kernel, preferred_element_type=jnp.float32)
        return (logits + self.bias[...]).reshape(b, p, -1)  # (B, P, V)


class BertForPreTraining(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if cfg.vocab_size <= 0:
            raise ValueError("ModelConfig.vocab_size must be set (from the tokenizer) before building the model")
        self.embeddings = Embeddings(cfg, rngs)
        self.scan_layers, self.remat = cfg.scan_layers, cfg.remat
        layers = [Layer(cfg, rngs) for _ in range(cfg.num_hidden_layers)]
        if cfg.scan_layers:  # one Layer whose parameters stack the layers' on a leading axis: the same init
            stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(nnx.state(layer) for layer in layers))
            self.layers = nnx.merge(nnx.graphdef(layers[0]), stacked)
        else:
            self.layers = nnx.List(layers)
        self.pooler = _dense(cfg, cfg.hidden_size, cfg.hidden_size, rngs)
        self.mlm = MLMHead(cfg, rngs)
        self.nsp = _dense(cfg, cfg.hidden_size, 2, rngs)

    def encode(self, input_ids, segment_ids, valid_lens, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None):
        """Contextual vectors (B, T, D); positions at or past `valid_lens` are attended by no one."""
        key_mask = jnp.arange(input_ids.shape[1])[None, :] < valid_lens[:, None]  # (B, T)
        x = self.embeddings(input_ids, segment_ids, deterministic=deterministic, rngs=rngs)
        call = lambda layer, x, r: layer(x, key_mask, deterministic=deterministic, rngs=r)
        if self.remat:
            call = nnx.remat(call)
        if not self.scan_layers:
            for layer in self.layers:
                x = call(layer, x, rngs)
            return x
        # One dropout key per layer, scanned along with the layer's parameters.
        keys = None if deterministic else jax.random.split(rngs.dropout(), self.layers.output.kernel.shape[0])
        body = lambda x, layer, key: call(layer, x, None if key is None else nnx.Rngs(dropout=key))
        return nnx.scan(body, in_axes=(nnx.Carry, 0, None if keys is None else 0), out_axes=nnx.Carry)(
            x, self.layers, keys)

    def __call__(self, input_ids, segment_ids, valid_lens, masked_positions, *, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None):
        """(encoded (B, T, D), MLM logits (B, P, V), NSP logits (B, 2))."""
        x = self.encode(input_ids, segment_ids, valid_lens, deterministic=deterministic, rngs=rngs)
        gathered = jnp.take_along_axis(x, masked_positions[..., None], axis=1)  # (B, P, D)
        mlm_logits = self.mlm(gathered, self.embeddings.word_embeddings.embedding[...])
        pooled = jnp.tanh(self.pooler(x[:, 0]))  # (B, D), the <cls> vector
        return x, mlm_logits, self.nsp(pooled)
