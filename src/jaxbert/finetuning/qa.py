"""Extractive question answering: the encoder plus a span head, fine-tuned on SQuAD v1.1 and scored as the
official script scores it (exact match and F1 over the reference answers).

    jaxbert finetune --task squad --data SQUAD_DIR --init RUN_DIR --out OUT_DIR --max-len 384
    printf 'who came?\\ta crane driver came\\n' | jaxbert predict OUT_DIR

SQUAD_DIR holds `train-v1.1.json` and `dev-v1.1.json` (or `train.json` and `dev.json`). The head is
`transformers.BertForQuestionAnswering`'s: one dense layer from each token's vector to a start and an end logit;
the loss is the mean of the start and end cross-entropies; a window that does not hold the answer points both
at `<cls>`. Contexts longer than the window are cut as `squad.features` does, with a stride of half the window
(at most 128 tokens) and questions of at most a quarter of it (at most 64 tokens); answers are the best span
over all of a question's windows (`squad.postprocess`).
"""

from pathlib import Path

import jax.numpy as jnp
import optax
from flax import nnx

from jaxbert.config import FinetuneConfig, ModelConfig
from jaxbert.errors import JaxbertError
from jaxbert.finetuning import finetune, squad
from jaxbert.model.bert import BertForPreTraining

FILES = {"train": ("train-v1.1.json", "train.json"), "dev": ("dev-v1.1.json", "dev.json")}
INPUTS = ("input_ids", "segment_ids", "valid_lens")


class SpanModel(nnx.Module):
    """The encoder of `BertForPreTraining` and a dense layer to (start, end) logits per token."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.bert = BertForPreTraining(cfg, rngs=rngs)
        self.qa_outputs = nnx.Linear(cfg.hidden_size, 2, rngs=rngs,
                                     kernel_init=nnx.initializers.normal(cfg.initializer_range))

    def __call__(self, input_ids, segment_ids, valid_lens, *, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None):
        """(start logits, end logits), each (B, T)."""
        x = self.bert.encode(input_ids, segment_ids, valid_lens, deterministic=deterministic, rngs=rngs)
        logits = self.qa_outputs(x)  # (B, T, 2)
        return logits[..., 0], logits[..., 1]


def span_loss(model, batch, key):
    start, end = model(*(batch[k] for k in INPUTS), deterministic=False, rngs=nnx.Rngs(dropout=key))
    ce = optax.softmax_cross_entropy_with_integer_labels
    return (ce(start.astype(jnp.float32), batch["start_positions"]).mean()
            + ce(end.astype(jnp.float32), batch["end_positions"]).mean()) / 2


def span_predict(model, batch):
    return model(*(batch[k] for k in INPUTS))


def windows(cfg: FinetuneConfig) -> dict:
    """`squad.features`' window settings for a fine-tuning `max_len`."""
    return {"max_len": cfg.max_len, "doc_stride": min(128, cfg.max_len // 2),
            "max_query_len": min(64, cfg.max_len // 4)}


def find(data_dir: Path, split: str) -> Path:
    for name in FILES[split]:
        if (Path(data_dir) / name).is_file():
            return Path(data_dir) / name
    raise JaxbertError(f"{data_dir} holds neither {' nor '.join(FILES[split])}; --data must be a folder with "
                       "SQuAD v1.1's train and dev JSON files")


def job(cfg: FinetuneConfig, data_dir: Path, init: Path, random_init: bool) -> finetune.Job:
    """`runs.run`'s job for SQuAD: the span model from the run, windows of both splits, EM/F1 on dev."""
    train_examples, dev_examples = squad.read(find(data_dir, "train")), squad.read(find(data_dir, "dev"))
    if cfg.max_train_examples:
        train_examples = train_examples[:cfg.max_train_examples]
    source, tok, model = finetune.from_run(init, cfg, lambda m: SpanModel(m, rngs=nnx.Rngs(params=cfg.seed)),
                                           pretrained=not random_init)
    train = squad.features(train_examples, tok, train=True, **windows(cfg))
    train_arrays = {k: train[k] for k in INPUTS + ("start_positions", "end_positions")}
    if len(train_arrays["input_ids"]) < cfg.batch_size:
        raise JaxbertError(f"{len(train_arrays['input_ids'])} training windows are fewer than one batch of "
                           f"{cfg.batch_size}; lower --batch-size")
    dev = squad.features(dev_examples, tok, train=False, **windows(cfg))

    def evaluate(predict_step, params) -> dict:
        start, end = finetune.predict(predict_step, params, {k: dev[k] for k in INPUTS}, cfg.batch_size)
        return squad.evaluate(dev_examples, squad.postprocess(dev_examples, dev, start, end))

    return finetune.Job(source, tok, model, train_arrays, evaluate, "f1", {"pair": True}, span_loss, span_predict)
