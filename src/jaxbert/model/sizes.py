"""What a config costs, in closed form (no JAX): parameters and training FLOPs per token; `jaxbert presets`.

`jaxbert plan` gives the same figures from the model itself (`jax.eval_shape`, XLA's cost analysis) and memory per
device; this module is the quick look a user takes before choosing a preset.
"""

from jaxbert.config import PRESETS, Config, ModelConfig

VOCAB = 30522  # bert-base-uncased's WordPiece vocabulary, for presets whose vocabulary comes from a tokenizer
BOOK_VOCAB = 20256  # the book's word vocabulary on WikiText-2


def parameters(m: ModelConfig) -> int:
    """`transformers.BertForPreTraining`'s parameter count for `m` (its vocabulary must be set)."""
    d, f, v = m.hidden_size, m.intermediate_size, m.vocab_size
    embeddings = (v + m.max_position_embeddings + m.type_vocab_size) * d + 2 * d  # and their LayerNorm
    layer = 4 * (d * d + d) + 2 * d + (d * f + f) + (f * d + d) + 2 * d
    heads = (d * d + d) + (d * d + d + 2 * d + v) + (2 * d + 2)  # pooler; MLM transform, LayerNorm, bias; NSP
    return embeddings + m.num_hidden_layers * layer + heads + (0 if m.tie_word_embeddings else d * v)


def train_flops_per_token(cfg: Config) -> float:
    """Multiply-adds x 2 of one training step (forward and backward: 3x the forward) per token: the layers'
    matmuls, attention's scores and weighted sums over `max_len` positions, and the MLM head on the predicted
    share of the tokens. Elementwise work (softmax, LayerNorm, GELU) is left out."""
    m, t = cfg.model, cfg.data.max_len
    d, f, v = m.hidden_size, m.intermediate_size, m.vocab_size
    layer = 2 * (4 * d * d + 2 * d * f) + 4 * t * d
    mlm = cfg.data.num_predictions / t * 2 * (d * d + d * v)
    return 3.0 * (m.num_hidden_layers * layer + mlm)


def with_vocab(cfg: Config) -> Config:
    """`cfg` with the vocabulary its tokenizer would give when none is set (the book's words for d2l-tiny)."""
    import dataclasses

    if cfg.model.vocab_size:
        return cfg
    size = BOOK_VOCAB if cfg.preset.startswith("d2l-") else VOCAB
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=size))


def table() -> list[str]:
    """The presets, one line each."""
    out = [f"{'preset':<15}{'layers/hidden/heads/FFN':>25}{'parameters':>13}{'GFLOP/token':>13}"
           f"{'seq x batch':>13}{'steps':>11}  what"]
    for name, cfg in PRESETS.items():
        cfg, m = with_vocab(cfg), with_vocab(cfg).model
        shape = f"{m.num_hidden_layers}/{m.hidden_size}/{m.num_attention_heads}/{m.intermediate_size}"
        out.append(f"{name:<15}{shape:>25}{parameters(m) / 1e6:>12.1f}M{train_flops_per_token(cfg) / 1e9:>13.4f}"
                   f"{f'{cfg.data.max_len} x {cfg.train.batch_size}':>13}{cfg.train.steps:>11,}  {NOTES[name]}")
    out.append(f"(vocabulary {VOCAB:,} pieces; d2l-*: the book's {BOOK_VOCAB:,} words. Training FLOPs per token in "
               "closed form; `jaxbert plan --preset NAME` counts them with XLA and adds memory per device.)")
    return out


NOTES = {
    "d2l-tiny": "the book's run: ReLU, untied decoder, dropout 0.2, Adam 1e-4, its pairs",
    "d2l-tiny-fast": "the book's model, CPU recipe: full windows, MLM only, lr 2e-3; use --budget",
    "bert-tiny-cpu": "bert-tiny with the CPU recipe: MLM only, lr 2e-3, no dropout; use --budget",
    "bert-tiny": "Google's compact BERTs and BERT-Base/Large: AdamW 1e-4, 10k warmup, 1M steps;",
    "bert-mini": "  on a CPU give --budget or --set train.steps=N",
    "bert-small": "",
    "bert-medium": "",
    "bert-base": "",
    "bert-large": "",
}
