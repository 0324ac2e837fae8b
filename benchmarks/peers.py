"""W1 side by side: the book's workload (d2l-tiny, batch 512, max_len 64, 10 prediction slots, Adam) in jaxbert
and its peers, each in a fresh process, on the same real WikiText-2 batches.

    python benchmarks/peers.py --data ../shared/data/wikitext-2 [--steps 20] [--warmup 3] [--systems ...]

Systems: jaxbert in float32 and `model.dtype=bfloat16` (the step `jaxbert pretrain` runs); the book's PyTorch
code (d2l 1.0.3 `BERTModel`, `_get_batch_loss_bert`, Adam); the book's model in JAX (its classes in flax.linen on
d2l's JAX `TransformerEncoderBlock`); keras-hub's `BertBackbone` on Keras 3's JAX backend; transformers
`BertForPreTraining` shaped as d2l-tiny on jaxbert's loss, eager, under `torch.compile` and under bf16 autocast.
Per system: the median of the steps after `--warmup`, the first step, peak RSS, the first loss, and the FLOP rate
(XLA's count of jaxbert's float32 step, the same layer shapes for all) against this run's matmul peaks.
"""

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

import harness

SYSTEMS = ("jaxbert", "jaxbert-bf16", "d2l", "d2l-jax", "keras-hub", "transformers", "transformers-compile",
           "transformers-bf16")


def load_batches(path: Path) -> list[dict]:
    return pickle.loads(path.read_bytes())


def w1_config(vocab_size: int, bf16: bool = False):
    from jaxbert import config

    return config.override(config.preset("d2l-tiny"), [f"model.vocab_size={vocab_size}"]
                           + (["model.dtype=bfloat16"] if bf16 else []))


def jaxbert_step(cfg):
    """`step(batch) -> loss` as `jaxbert pretrain` runs it."""
    import jax

    from jaxbert.training import optim, train

    tx = optim.optimizer(cfg.optim, cfg.train.steps)
    graphdef, state = train.init_state(cfg, tx)
    train_step, _ = train.make_steps(graphdef, tx, jax.random.key(0), mlm_chunk=cfg.train.mlm_chunk)
    box = [state]

    def step(batch):
        box[0], metrics = train_step(box[0], batch)
        return metrics["loss"]

    return step


def d2l_torch():
    """d2l 1.0.3's PyTorch module. It imports torchvision for its image loaders, which BERT never uses."""
    import types

    if "torchvision" not in sys.modules:
        stand_in = types.ModuleType("torchvision")
        stand_in.transforms = types.ModuleType("torchvision.transforms")
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = stand_in, stand_in.transforms
    from d2l import torch as d2l

    return d2l


def d2l_step(vocab_size: int, first_batch: dict, lr: float):
    """`step(batch) -> loss` of the book's d2l-tiny `BERTModel` (seed 0): its `_get_batch_loss_bert`, then Adam."""
    return d2l_trainer(vocab_size, first_batch, lr)[1]


def d2l_trainer(vocab_size: int, first_batch: dict, lr: float):
    """(the book's model, its `step(batch) -> loss`), as `d2l_step`."""
    import torch
    from torch import nn

    d2l = d2l_torch()
    torch.manual_seed(0)
    net = d2l.BERTModel(vocab_size, num_hiddens=128, ffn_num_hiddens=256, num_heads=2, num_blks=2, dropout=0.2)
    loss = nn.CrossEntropyLoss()  # the book's: it averages over every slot before the weights apply
    b = {k: torch.from_numpy(v) for k, v in first_batch.items()}
    net(b["input_ids"].long(), b["segment_ids"].long(), b["valid_lens"].float(),
        b["masked_positions"].long())  # materialises the lazy layers before Adam sees the parameters
    trainer = torch.optim.Adam(net.parameters(), lr=lr)

    def step(batch):
        t = {k: torch.from_numpy(v) for k, v in batch.items()}
        trainer.zero_grad()
        _, _, total = d2l._get_batch_loss_bert(
            net, loss, vocab_size, t["input_ids"].long(), t["segment_ids"].long(), t["valid_lens"].float(),
            t["masked_positions"].long(), t["masked_weights"].float(), t["masked_ids"].long(),
            t["nsp_labels"].long())
        total.backward()
        trainer.step()
        return total.detach()

    return net, step


def d2l_jax():
    """d2l 1.0.3's JAX module (flax.linen). It imports TensorFlow for its data loaders, which BERT never uses."""
    import types

    stand_ins = [name for name in ("tensorflow", "tensorflow_datasets") if name not in sys.modules]
    sys.modules.update({name: types.ModuleType(name) for name in stand_ins})
    try:
        from d2l import jax as d2l
    finally:  # keras and others probe sys.modules for TensorFlow
        for name in stand_ins:
            del sys.modules[name]
    return d2l


def d2l_jax_model(vocab_size):
    """The chapter's BERTModel (BERTEncoder, MaskLM, NextSentencePred) in flax.linen on d2l's JAX
    `TransformerEncoderBlock`: the book's PyTorch classes line for line, as its JAX edition writes modules."""
    import jax.numpy as jnp
    from flax import linen as nn

    d2l = d2l_jax()

    class BERTModel(nn.Module):
        vocab_size: int
        num_hiddens: int = 128
        ffn_num_hiddens: int = 256
        num_heads: int = 2
        num_blks: int = 2
        dropout: float = 0.2
        max_len: int = 1000

        @nn.compact
        def __call__(self, tokens, segments, valid_lens, pred_positions, training=False):
            X = nn.Embed(self.vocab_size, self.num_hiddens)(tokens) + nn.Embed(2, self.num_hiddens)(segments)
            pos = self.param("pos_embedding", nn.initializers.normal(1.0), (1, self.max_len, self.num_hiddens))
            X = X + pos[:, :X.shape[1], :]
            for _ in range(self.num_blks):
                X, _ = d2l.TransformerEncoderBlock(self.num_hiddens, self.ffn_num_hiddens, self.num_heads,
                                                   self.dropout, True)(X, valid_lens, training=training)
            batch_idx = jnp.repeat(jnp.arange(X.shape[0]), pred_positions.shape[1])  # MaskLM
            masked_X = X[batch_idx, pred_positions.reshape(-1)].reshape(*pred_positions.shape, -1)
            mlm_Y_hat = nn.Dense(self.vocab_size)(nn.LayerNorm()(nn.relu(nn.Dense(self.num_hiddens)(masked_X))))
            nsp_Y_hat = nn.Dense(2)(nn.tanh(nn.Dense(self.num_hiddens)(X[:, 0, :])))  # hidden, NextSentencePred
            return mlm_Y_hat, nsp_Y_hat

    return BERTModel(vocab_size)


def d2l_jax_loss(model, params, batch, key=None):
    import jax.numpy as jnp

    mlm, nsp = model.apply({"params": params}, batch["input_ids"], batch["segment_ids"],
                           batch["valid_lens"].astype(jnp.float32), batch["masked_positions"],
                           training=key is not None, rngs=None if key is None else {"dropout": key})
    return d2l_jax_batch_loss(mlm, nsp, batch)


def d2l_jax_batch_loss(mlm, nsp, batch):
    """The seed's loss from the heads' logits, written as the book's `_get_batch_loss_bert` with per-slot
    cross-entropies: the MLM mean over the real predictions, plus NSP."""
    import optax

    w = batch["masked_weights"].reshape(-1)
    mlm_l = optax.softmax_cross_entropy_with_integer_labels(mlm.reshape(-1, mlm.shape[-1]),
                                                            batch["masked_ids"].reshape(-1))
    return (mlm_l * w).sum() / (w.sum() + 1e-8) + optax.softmax_cross_entropy_with_integer_labels(
        nsp, batch["nsp_labels"]).mean()


def d2l_jax_step(vocab_size: int, first_batch: dict):
    import jax
    import optax

    model = d2l_jax_model(vocab_size)
    b = first_batch
    params = model.init(jax.random.key(0), b["input_ids"], b["segment_ids"], b["valid_lens"].astype("float32"),
                        b["masked_positions"])["params"]
    opt = optax.adam(0.01)  # the book's train_bert
    box = [params, opt.init(params), jax.random.key(1)]

    @jax.jit
    def train_step(params, opt_state, batch, key):
        loss, grads = jax.value_and_grad(lambda p: d2l_jax_loss(model, p, batch, key))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def step(batch):
        box[2], key = jax.random.split(box[2])
        box[0], box[1], loss = train_step(box[0], box[1], batch, key)
        return loss

    return step


def keras_on_jax():
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")  # read once, when keras is first imported
    import keras

    assert keras.backend.backend() == "jax", keras.backend.backend()
    return keras


def keras_hub_model(vocab_size):
    """keras-hub's `BertBackbone` on the JAX backend shaped as d2l-tiny (its FFN activation is GELU), with its
    `MaskedLMHead` (ReLU transform, untied decoder) and a dense NSP head on the pooled output."""
    keras = keras_on_jax()
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=vocab_size, num_layers=2, num_heads=2, hidden_dim=128,
                                             intermediate_dim=256, dropout=0.2, max_sequence_length=64)
    inputs = {name: keras.Input((None,), dtype="int32", name=name)
              for name in ("token_ids", "segment_ids", "padding_mask", "mask_positions")}
    out = backbone({k: inputs[k] for k in ("token_ids", "segment_ids", "padding_mask")})
    mlm = keras_hub.layers.MaskedLMHead(vocabulary_size=vocab_size, intermediate_activation="relu", name="mlm")(
        out["sequence_output"], mask_positions=inputs["mask_positions"])
    nsp = keras.layers.Dense(2, name="nsp")(out["pooled_output"])
    return keras.Model(inputs, {"mlm": mlm, "nsp": nsp})


def keras_inputs(batch):
    t = batch["input_ids"].shape[1]
    mask = (np.arange(t)[None] < batch["valid_lens"][:, None]).astype("int32")
    return {"token_ids": batch["input_ids"], "segment_ids": batch["segment_ids"], "padding_mask": mask,
            "mask_positions": batch["masked_positions"]}


def keras_compile(model):
    keras = keras_on_jax()
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss={head: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for head in ("mlm", "nsp")})
    return model


def keras_targets(batch) -> tuple[dict, dict]:
    """(y, sample_weight) for `train_on_batch`. Keras averages weighted losses over every slot; scaling the
    weights by slots / real slots makes that the seed's mean over the real predictions."""
    w = batch["masked_weights"]
    w = w * (w.size / max(w.sum(), 1.0))
    return ({"mlm": batch["masked_ids"], "nsp": batch["nsp_labels"]},
            {"mlm": w, "nsp": np.ones(len(w), "float32")})


def transformers_model(vocab_size, max_len: int = 64):
    import torch
    import transformers

    torch.manual_seed(0)
    hf_cfg = transformers.BertConfig(vocab_size=vocab_size, hidden_size=128, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=256, hidden_act="relu",
                                     hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2,
                                     max_position_embeddings=max_len, tie_word_embeddings=False)
    return transformers.BertForPreTraining(hf_cfg).train()


def transformers_loss(model, t):
    """jaxbert's loss (losses.py) on transformers' modules, the MLM head run on the gathered slots only."""
    import torch
    import torch.nn.functional as F

    ids, valid = t["input_ids"].long(), t["valid_lens"].long()
    mask = (torch.arange(ids.shape[1], device=ids.device)[None] < valid[:, None]).long()
    out = model.bert(input_ids=ids, token_type_ids=t["segment_ids"].long(), attention_mask=mask)
    gathered = torch.gather(out.last_hidden_state, 1,
                            t["masked_positions"].long()[..., None].expand(-1, -1, out.last_hidden_state.shape[-1]))
    logits = model.cls.predictions(gathered).float()
    w = t["masked_weights"].float()
    ce = F.cross_entropy(logits.flatten(0, 1), t["masked_ids"].long().flatten(), reduction="none").view_as(w)
    mlm = (ce * w).sum() / w.sum().clamp(min=1.0)
    # transformers' NSP class 0 is "B follows A", jaxbert's class 1 (the export swaps the head's rows).
    nsp = F.cross_entropy(model.cls.seq_relationship(out.pooler_output).float(), 1 - t["nsp_labels"].long())
    return mlm + nsp


def keras_hub_step(vocab_size: int):
    model = keras_compile(keras_hub_model(vocab_size))
    return lambda batch: np.asarray(model.train_on_batch(keras_inputs(batch), *keras_targets(batch))).reshape(-1)[0]


def torch_device() -> str:
    """Where the PyTorch peers run: $PEERS_DEVICE (set by `--device`, inherited by the workers), else cpu."""
    return os.environ.get("PEERS_DEVICE", "cpu")


def transformers_step(model, opt, mode: str = "eager"):
    """`step(batch) -> loss` of a transformers `BertForPreTraining` on jaxbert's loss, on `torch_device()`:
    "eager", "compile" (`torch.compile`) or "bf16" (autocast). Build `opt` on the model before calling: the
    model moves in place, its parameters stay the ones `opt` holds."""
    import torch

    device = torch_device()
    model.to(device)

    def train_step(t):
        opt.zero_grad()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=mode == "bf16"):
            loss = transformers_loss(model, t)
        loss.backward()
        opt.step()
        return loss.detach()

    fn = torch.compile(train_step) if mode == "compile" else train_step
    return lambda batch: fn({k: torch.from_numpy(v).to(device) for k, v in batch.items()})


def w1_step(system: str, vocab_size: int, first_batch: dict):
    if system.startswith("jaxbert"):
        return jaxbert_step(w1_config(vocab_size, bf16=system.endswith("bf16")))
    if system == "d2l":
        return d2l_step(vocab_size, first_batch, lr=0.01)  # the book's train_bert rate
    if system == "d2l-jax":
        return d2l_jax_step(vocab_size, first_batch)
    if system == "keras-hub":
        return keras_hub_step(vocab_size)
    import torch

    model = transformers_model(vocab_size)
    return transformers_step(model, torch.optim.Adam(model.parameters(), lr=1e-4), system.partition("-")[2] or "eager")


def worker(step, batches: list[dict]) -> None:
    """Print the time and loss of every step as the worker's JSON line."""
    times, losses = harness.timed(lambda batch: float(step(batch)), batches)
    print(json.dumps({"times": times, "first_loss": losses[0]}))


def matmul_peaks(n: int = 2048) -> dict:
    """GFLOP/s of an n^3 matmul (median of 7) in JAX on its default device (float32; bfloat16 operands with
    float32 sums, as `model.mixed_matmul` runs them) and PyTorch on `torch_device()` (float32, bfloat16)."""
    import jax
    import jax.numpy as jnp
    import torch

    device = torch_device()
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    out = {}
    for dtype in ("float32", "bfloat16"):
        a, t = jnp.ones((n, n), dtype), torch.ones((n, n), dtype=getattr(torch, dtype), device=device)
        f = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
        out[f"jax {dtype}"] = 2 * n ** 3 / harness.median_seconds(lambda: f(a).block_until_ready()) / 1e9
        out[f"torch {dtype}"] = 2 * n ** 3 / harness.median_seconds(lambda: (t @ t, sync())) / 1e9
    return out


def step_flops(cfg, rows: int) -> float:
    """XLA's FLOP count of jaxbert's train step for `cfg` at `rows` rows, with the plain MLM output layer (XLA counts
    a loop's body once, and the fused layer's recomputed logits are not the model's FLOPs)."""
    from jaxbert import config
    from jaxbert.training import plan

    cost = plan.lowered_step(config.override(cfg, ["train.mlm_chunk=0"]), rows).cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def compare(script: str, systems, batches: list[dict], vocab_size: int, flops: float, warmup: int, unit: str):
    """Each system's steps in a fresh process (`script --worker SYSTEM`), a table row each against the matmul peaks
    of this process; a failed system is reported and left out."""
    peaks = matmul_peaks()
    print("matmul peaks (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    fp32_peak = max(v for k, v in peaks.items() if k.endswith("float32"))
    bf16_peak = max(v for k, v in peaks.items() if k.endswith("bfloat16"))
    harness.table("system", f"median {unit}/s", "median step (s)", "first step (s)", "peak RSS (MB)", "GFLOP/s",
                  "% fp32 peak", "% bf16 peak", "first loss")
    rows = len(batches[0]["input_ids"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "batches.pickle"
        path.write_bytes(pickle.dumps(batches))
        for system in systems:
            r = harness.fresh([script, "--worker", system, "--batches", str(path), "--vocab-size", str(vocab_size)])
            if r:
                step = statistics.median(r["times"][warmup:])
                rate = flops / step / 1e9
                harness.row(system, f"{rows / step:.4g}", f"{step:.3f}", f"{r['times'][0]:.2f}",
                            f"{r['peak_rss_mb']:.0f}", f"{rate:.0f}", f"{100 * rate / fp32_peak:.0f}%",
                            f"{100 * rate / bf16_peak:.0f}%", f"{r['first_loss']:.3f}")


def arguments(doc: str, systems, steps: int, warmup: int) -> argparse.ArgumentParser:
    """The options peers.py and base_train.py share, the worker's hidden ones included."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="folder with wiki.train.tokens")
    ap.add_argument("--steps", type=int, default=steps, help="steady steps timed after the warmup")
    ap.add_argument("--warmup", type=int, default=warmup, help="first steps left out (compilation)")
    ap.add_argument("--systems", nargs="+", default=list(systems), choices=systems)
    ap.add_argument("--device", choices=("cpu", "cuda"), default=torch_device(),
                    help="where the PyTorch peers run (jaxbert runs on JAX's default device)")
    ap.add_argument("--worker", choices=systems, help=argparse.SUPPRESS)
    ap.add_argument("--batches", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--vocab-size", type=int, help=argparse.SUPPRESS)
    return ap


def main() -> None:
    args = arguments(__doc__, SYSTEMS, steps=20, warmup=3).parse_args()
    os.environ["PEERS_DEVICE"] = args.device  # the workers inherit it
    if args.worker:
        batches = load_batches(args.batches)
        return worker(w1_step(args.worker, args.vocab_size, batches[0]), batches)

    from jaxbert import config
    from jaxbert.data import corpus
    from jaxbert.data.batches import load_wikitext2

    print(harness.machine())
    cfg = config.preset("d2l-tiny")
    tok, train_set, _ = load_wikitext2(corpus.locate_wikitext2(args.data), cfg.data)
    batches = [train_set.batch(step, cfg.train.batch_size) for step in range(args.warmup + args.steps)]
    flops = step_flops(w1_config(tok.get_vocab_size()), cfg.train.batch_size)
    print(f"W1: vocabulary {tok.get_vocab_size()}, {flops:.3g} FLOP per step (XLA's count of jaxbert's float32 step)")
    compare(__file__, args.systems, batches, tok.get_vocab_size(), flops, args.warmup, "pairs")


if __name__ == "__main__":
    main()
