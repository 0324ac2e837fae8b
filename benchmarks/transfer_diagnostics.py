"""Which part of a pretrained run helps or hurts fine-tuning: SST-2 from partial initialisations, one seed.

    python benchmarks/transfer_diagnostics.py RUN_DIR --data ../shared/data/glue/SST-2 \
        --inits pretrained,random,pretrained-fresh-words,random-pretrained-words [--pool cls|mean] [--set lr=1e-3]

Each init fine-tunes GLUE-lite's SST-2 settings (`glue.SETTINGS`, overridable with --set field=value) from:
  pretrained               the run's encoder (what `jaxbert glue` calls pretrained)
  random                   fresh weights, same architecture (the control)
  pretrained-fresh-words   the run's encoder with freshly initialised word embeddings
  random-pretrained-words  fresh weights except the run's word embeddings
--pool mean replaces the `<cls>` pooler by the mean of the last layer over the valid tokens (a diagnostic only:
the exported head is BertForSequenceClassification's). Prints one line per init: best dev accuracy, its
epoch's training loss, and the wall time.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from jaxbert import finetune, glue, tasks  # noqa: E402
from jaxbert.encode import restore_run  # noqa: E402
from machine import cpu_line  # noqa: E402

INITS = ("pretrained", "random", "pretrained-fresh-words", "random-pretrained-words")


class MeanPooled(finetune.Classifier):
    def __call__(self, input_ids, segment_ids, valid_lens, *, deterministic=True, rngs=None):
        x = self.bert.encode(input_ids, segment_ids, valid_lens, deterministic=deterministic, rngs=rngs)
        valid = (jnp.arange(x.shape[1])[None] < valid_lens[:, None])[..., None]  # (B, T, 1)
        pooled = (x * valid).sum(1) / valid.sum(1)
        return self.classifier(self.dropout(pooled, deterministic=deterministic, rngs=rngs))


def model_for(init: str, source, encoder, cls, seed: int):
    model = cls(source.model, 2, rngs=nnx.Rngs(params=seed))
    fresh_words = model.bert.embeddings.word_embeddings.embedding[...]
    if init in ("pretrained", "pretrained-fresh-words"):
        nnx.update(model.bert, encoder)
    if init == "pretrained-fresh-words":
        model.bert.embeddings.word_embeddings.embedding[...] = fresh_words
    if init == "random-pretrained-words":
        words = encoder["embeddings"]["word_embeddings"]["embedding"]
        model.bert.embeddings.word_embeddings.embedding[...] = words[...]
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--data", type=Path, required=True, help="the SST-2 folder (train.tsv, dev.tsv)")
    p.add_argument("--inits", default=",".join(INITS))
    p.add_argument("--pool", choices=("cls", "mean"), default="cls")
    p.add_argument("--set", action="append", default=[], help="FinetuneConfig field=value, e.g. learning_rate=1e-3")
    args = p.parse_args()
    cfg = glue.SETTINGS["sst2"]
    for item in args.set:
        name, value = item.split("=", 1)
        cfg = dataclasses.replace(cfg, **{name: type(getattr(cfg, name))(value)})
    task = tasks.get("sst2")
    source, tok, pretrained, _ = restore_run(args.run)
    encoder = nnx.state(pretrained, nnx.Param)
    train_arrays, val_arrays, dev_arrays = finetune.load_splits(cfg, task, args.data, tok)
    print(cpu_line(), f"| {args.run} | pool {args.pool} | lr {cfg.learning_rate} | seed {cfg.seed}", flush=True)
    for init in args.inits.split(","):
        started = time.perf_counter()
        model = model_for(init, source, encoder, MeanPooled if args.pool == "mean" else finetune.Classifier, cfg.seed)
        best, params, steps = finetune.fit(cfg, model, train_arrays, finetune.scorer(task, val_arrays, cfg.batch_size),
                                           "accuracy", quiet=True)
        dev = finetune.scorer(task, dev_arrays, cfg.batch_size)(steps[1], params)  # the chosen epoch, once
        print(json.dumps({"init": init, "dev_accuracy": round(dev["accuracy"], 4), "epoch": best["epoch"],
                          "train_loss": round(best["train_loss"], 4),
                          "seconds": round(time.perf_counter() - started)}), flush=True)


if __name__ == "__main__":
    main()
