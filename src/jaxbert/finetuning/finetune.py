"""Fine-tuning: a pretrained encoder plus a small classification head, trained on a task's examples.

    jaxbert finetune --task sst2 --data ../shared/data/glue/SST-2 --init runs/tiny --out runs/sst2
    jaxbert finetune ... --random-init     # the same architecture and tokenizer without pretraining: the control

The head is `transformers.BertForSequenceClassification`'s: dropout (`--dropout`, 0.1 as in BERT, whatever the
run pretrained with) and a dense layer on the pooled `<cls>` vector. Training is AdamW with linear warmup and
decay (clipped at norm 1). A validation slice held out of the training file (`--validation` examples, class-
balanced) is scored after every epoch and chooses the epoch kept; the reported split (GLUE's dev.tsv, IMDb's
test reviews) is scored once, with that epoch's parameters. `--labels N` trains on a class-balanced draw of N
labelled examples. A NaN or infinite loss stops the run at the end of its epoch.

`runs.py` makes and uses the output directory; this module is the machinery it and the reports share.
"""

import dataclasses
from pathlib import Path
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from jaxbert.config import Config, FinetuneConfig, ModelConfig, OptimConfig
from jaxbert.data import tokenization
from jaxbert.encode import restore_run
from jaxbert.errors import JaxbertError
from jaxbert.finetuning import tasks
from jaxbert.model.bert import BertForPreTraining, Dropout
from jaxbert.training import optim


class Classifier(nnx.Module):
    """The encoder and pooler of `BertForPreTraining`, then dropout and a dense layer to the labels."""

    def __init__(self, cfg: ModelConfig, num_labels: int, *, rngs: nnx.Rngs):
        self.bert = BertForPreTraining(cfg, rngs=rngs)
        self.dropout = Dropout(cfg.hidden_dropout_prob)
        self.classifier = nnx.Linear(cfg.hidden_size, num_labels, rngs=rngs,
                                     kernel_init=nnx.initializers.normal(cfg.initializer_range))

    def __call__(self, input_ids, segment_ids, valid_lens, *, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None):
        """Logits (B, labels)."""
        x = self.bert.encode(input_ids, segment_ids, valid_lens, deterministic=deterministic, rngs=rngs)
        pooled = jnp.tanh(self.bert.pooler(x[:, 0]))  # (B, D), as in pretraining's NSP head
        return self.classifier(self.dropout(pooled, deterministic=deterministic, rngs=rngs))


@flax.struct.dataclass
class State:
    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState


def encode_texts(tok, data: tasks.TextPairs, max_len: int, truncation: str = "head") -> dict[str, np.ndarray]:
    """Fixed-shape arrays: ids, segment ids (B is segment 1) and valid lengths, truncated and padded.

    Pairs are cut longest-first, as transformers does. A single text longer than `max_len` keeps its first
    pieces ("head"), or ("head_tail") its first quarter and its last three quarters of `max_len`: the head and
    tail of a long review carry most of its verdict (Sun et al. 2019 found 128 + 382 of 512 best on IMDb)."""
    tok = tok.from_str(tok.to_str())  # a copy: truncation and padding are settings of the tokenizer
    pad = tokenization.special_ids(tok).pad
    inputs = list(zip(data.text_a, data.text_b)) if data.text_b is not None else data.text_a
    if truncation == "head_tail" and data.text_b is None:
        tok.no_truncation()
        tok.no_padding()
        n, ids = max_len - 2, np.full((len(inputs), max_len), pad, np.int32)
        head = n // 4
        lens = np.zeros(len(inputs), np.int32)
        for i, e in enumerate(tok.encode_batch(inputs)):
            body = e.ids[1:-1]  # between <cls> and <sep>
            if len(body) > n:
                body = body[:head] + body[len(body) - (n - head):]
            row = [e.ids[0], *body, e.ids[-1]]
            ids[i, :len(row)], lens[i] = row, len(row)
        return {"input_ids": ids, "segment_ids": np.zeros_like(ids), "valid_lens": lens,
                "labels": data.labels.astype(np.int32)}
    if truncation not in ("head", "head_tail"):
        raise JaxbertError(f"--truncation {truncation!r} is not one of head, head_tail")
    tok.enable_truncation(max_len)
    tok.enable_padding(pad_id=pad, pad_token=tok.id_to_token(pad), length=max_len)
    encs = tok.encode_batch(inputs)
    return {"input_ids": np.array([e.ids for e in encs], np.int32),
            "segment_ids": np.array([e.type_ids for e in encs], np.int32),
            "valid_lens": np.array([sum(e.attention_mask) for e in encs], np.int32),
            "labels": data.labels.astype(np.int32)}


def check_max_len(cfg: FinetuneConfig, model_cfg: ModelConfig, run_dir: Path) -> None:
    positions = model_cfg.max_position_embeddings
    if cfg.max_len > positions:
        raise JaxbertError(f"--max-len {cfg.max_len} is longer than the {positions} positions of {run_dir}'s model; "
                           f"use --max-len {positions} or less")


def from_run(run_dir: Path, cfg: FinetuneConfig, make, *, pretrained: bool = True):
    """(source config, tokenizer, model): `make(model config)` with fine-tuning's dropout (`cfg.dropout`, not
    the run's), its `bert` holding the run's weights (or fresh ones). Refuses a `cfg.max_len` longer than the
    run's position table, whose missing rows would turn into NaN embeddings."""
    source, tok, pretrained_model, _ = restore_run(run_dir)
    check_max_len(cfg, source.model, run_dir)
    model = make(with_dropout(source.model, cfg))
    if pretrained:
        nnx.update(model.bert, nnx.state(pretrained_model, nnx.Param))
    return source, tok, model


def classification_loss(model, batch, key):
    logits = model(batch["input_ids"], batch["segment_ids"], batch["valid_lens"], deterministic=False,
                   rngs=nnx.Rngs(dropout=key))
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["labels"]).mean()


def classification_predict(model, batch):
    return model(batch["input_ids"], batch["segment_ids"], batch["valid_lens"]).argmax(-1)


def make_steps(graphdef, tx, loss=classification_loss, predict_fn=classification_predict):
    """(train_step, predict_step), jitted once; the dropout key is an argument, so seeds share the programs.

    `loss(model, batch, dropout_key)` is the training loss, `predict_fn(model, batch)` what evaluation reads."""
    def train_step(state: State, batch, dropout_key):
        key = jax.random.fold_in(dropout_key, state.step)
        value, grads = jax.value_and_grad(lambda p: loss(nnx.merge(graphdef, p), batch, key))(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state), value

    return (jax.jit(train_step, donate_argnums=0),
            jax.jit(lambda params, batch: predict_fn(nnx.merge(graphdef, params), batch)))


def predict(predict_step, params, arrays: dict[str, np.ndarray], batch_size: int, *, trim: bool = False):
    """`predict_step`'s output (an array or a tuple of arrays) for every row; the last batch is padded to the
    full size (one compiled shape).

    `trim` (for outputs with one row per example, not per token): rows go in order of length, and each batch
    is cut to its longest row rounded up to a multiple of `TRIM`, so that short examples do not pay for the
    padding of long ones (at most max_len / TRIM compiled shapes); the outputs come back in the rows' order."""
    n, out = len(arrays["input_ids"]), []
    width = arrays["input_ids"].shape[1]
    order = np.argsort(arrays["valid_lens"], kind="stable") if trim else np.arange(n)
    for start in range(0, n, batch_size):
        rows = order[np.minimum(np.arange(start, start + batch_size), n - 1)]
        batch = {k: v[rows] for k, v in arrays.items()}
        if trim:
            cut = min(width, -(-int(batch["valid_lens"].max()) // TRIM) * TRIM)
            batch = {k: v[:, :cut] if v.ndim == 2 and v.shape[1] == width else v for k, v in batch.items()}
        out.append(jax.device_get(predict_step(params, batch)))  # host sync
    back = np.argsort(order)  # the inverse permutation: row i's output is at position back[i]
    return jax.tree.map(lambda *parts: np.concatenate(parts)[:n][back], *out)


TRIM = 32  # granularity of `predict(trim=True)`'s batch lengths


def balanced_draw(labels: np.ndarray, n: int, rng: np.random.Generator, what: str) -> np.ndarray:
    """Indices of `n` examples, as many of each class as can be (the first classes in a seeded order take the
    remainder), each class's drawn at random; sorted."""
    classes = np.unique(labels)
    shares = np.full(len(classes), n // len(classes))
    shares[rng.permutation(len(classes))[:n % len(classes)]] += 1
    picked = []
    for c, share in zip(classes, shares):
        pool = np.flatnonzero(labels == c)
        if share > len(pool):
            raise JaxbertError(f"{what}: {n} examples need {share} of class {int(c)}, but the training set has "
                               f"{len(pool)}; ask for fewer")
        picked.append(rng.choice(pool, share, replace=False))
    return np.sort(np.concatenate(picked))


def subset(data: tasks.TextPairs, rows: np.ndarray) -> tasks.TextPairs:
    return tasks.TextPairs([data.text_a[i] for i in rows], data.text_b and [data.text_b[i] for i in rows],
                           data.labels[rows])


def split_training_set(cfg: FinetuneConfig, data: tasks.TextPairs) -> tuple[tasks.TextPairs, tasks.TextPairs]:
    """(examples to train on, validation slice) of a training file, as `cfg` says.

    The validation slice (class-balanced, `cfg.validation` examples, at most a tenth of the file) is the only
    thing that chooses the epoch; the reported split is scored once, at the end. `cfg.labelled` N > 0 trains on a
    class-balanced draw of N of the other examples; the draws depend on `cfg.data_seed` only, so both
    initialisations and every training seed see the same examples."""
    if cfg.max_train_examples:  # before tokenizing: the cap exists to make quick runs quick
        data = subset(data, np.arange(min(cfg.max_train_examples, len(data))))
    rng = np.random.default_rng([cfg.data_seed, 7])
    n_val = min(cfg.validation, len(data) // 10)
    if n_val < len(np.unique(data.labels)):
        raise JaxbertError(f"{len(data)} training examples are too few to hold out a validation slice (a tenth of "
                           f"them, one of each class at least); give a larger training file")
    val = balanced_draw(data.labels, n_val, rng, "--validation")
    rest = np.setdiff1d(np.arange(len(data)), val)
    if cfg.labelled:
        if cfg.labelled > len(rest):
            raise JaxbertError(f"--labels {cfg.labelled} is more than the {len(rest)} training examples left beside "
                               f"the validation slice; ask for fewer, or use --labels 0 for all")
        rest = rest[balanced_draw(data.labels[rest], cfg.labelled, rng, "--labels")]
    return subset(data, rest), subset(data, val)


def load_splits(cfg: FinetuneConfig, task: tasks.Task, data_dir: Path, tok):
    """(train, validation, reported) arrays: the training file split as `split_training_set` says, and the
    split that is reported (a GLUE folder's dev.tsv), of `data_dir`."""
    train_data, reported = task.read_splits(Path(data_dir))
    train_data, val_data = split_training_set(cfg, train_data)
    arrays = [encode_texts(tok, d, cfg.max_len, cfg.truncation) for d in (train_data, val_data, reported)]
    if len(arrays[0]["labels"]) < cfg.batch_size:
        raise JaxbertError(f"{len(arrays[0]['labels'])} training examples are fewer than one batch of "
                           f"{cfg.batch_size}; lower --batch-size")
    return tuple(arrays)


# Parameters that fine-tuning leaves as they are: the pretraining heads, which no task head reads (they stay in
# the model so that a pretrained run's state loads unchanged). Untouched, they cost no optimizer state or update
# (with a 20k-word vocabulary, the MLM decoder alone is half of d2l-tiny's parameters).
FROZEN = ("mlm", "nsp")


def optimizer(cfg: FinetuneConfig, num_examples: int) -> tuple[optax.GradientTransformation, int]:
    """AdamW with linear warmup over `warmup_fraction` of the steps and linear decay, for every parameter but
    the pretraining heads; (tx, total steps)."""
    total = num_examples // cfg.batch_size * cfg.epochs
    adamw = optim.optimizer(OptimConfig(learning_rate=cfg.learning_rate, warmup_steps=int(cfg.warmup_fraction * total),
                                        weight_decay=cfg.weight_decay), total)
    return optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()}, _labels), total


def _labels(params):
    """"frozen" for the pretraining heads under `bert`, "train" for everything else."""
    def label(path, _):
        names = [getattr(k, "key", k) for k in path]
        return "frozen" if len(names) > 1 and names[0] == "bert" and names[1] in FROZEN else "train"
    return jax.tree_util.tree_map_with_path(label, params)


def fit(cfg: FinetuneConfig, model: nnx.Module, train_arrays, evaluate, primary: str, *, steps=None,
        on_epoch=None, quiet: bool = False, loss=classification_loss, predict_fn=classification_predict,
        split: str = "val"):
    """Train `model`, scoring after each epoch; (best epoch's row, its parameters, the compiled steps).

    `evaluate(predict_step, params)` gives the epoch's scores on the validation slice (named `split` in the
    rows), and the first epoch with the highest `primary` score is the best. `steps` reuses the compiled
    (train_step, predict_step) of an earlier call with the same shapes and settings (default: classification's);
    `on_epoch(row, state, is_best)` runs after each.
    """
    n = len(train_arrays["input_ids"])
    per_epoch = n // cfg.batch_size
    tx, total = optimizer(cfg, n)
    graphdef, params = nnx.split(model, nnx.Param)
    params = jax.tree.map(jnp.copy, params)  # the steps donate the state: the model's own arrays stay intact
    state = State(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
    train_step, predict_step = steps or make_steps(graphdef, tx, loss, predict_fn)
    dropout_key, best, best_params = jax.random.key(cfg.seed), None, None
    bar = tqdm(total=total, unit="step", dynamic_ncols=True, disable=quiet)
    for epoch in range(1, cfg.epochs + 1):
        order, losses = np.random.default_rng([cfg.seed, epoch]).permutation(n), []
        for i in range(per_epoch):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            state, loss = train_step(state, {k: v[idx] for k, v in train_arrays.items()}, dropout_key)
            losses.append(loss)
            bar.update()
        losses = np.asarray(jax.device_get(losses))  # host sync, once an epoch
        if not np.isfinite(losses).all():
            bar.close()
            bad = int(np.argmin(np.isfinite(losses)))
            raise NonFinite(f"the fine-tuning loss became {losses[bad]} at step {(epoch - 1) * per_epoch + bad + 1} "
                            f"(epoch {epoch}); lower --learning-rate")
        scores = evaluate(predict_step, state.params)
        row = {"epoch": epoch, "step": int(state.step), "train_loss": float(np.mean(losses)),
               **{f"{split}_{k}": v for k, v in scores.items()}}
        if not quiet:
            bar.write(f"epoch {epoch}: train loss {row['train_loss']:.4f}, {split} "
                      + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        is_best = best is None or scores[primary] > best[f"{split}_{primary}"]
        if is_best:
            best, best_params = row, jax.tree.map(jnp.copy, state.params)  # the next step donates the state
        if on_epoch:
            on_epoch(row, state, is_best)
    bar.close()
    return best, best_params, (train_step, predict_step)


class NonFinite(JaxbertError):
    """A fine-tuning loss that is NaN or infinite: the run stops at the end of that epoch."""


def scorer(task: tasks.Task, dev_arrays, batch_size: int):
    """`fit`'s `evaluate` for a classification task: its metrics on the dev arrays."""
    return lambda predict_step, params: task.score(predict(predict_step, params, dev_arrays, batch_size, trim=True),
                                                   dev_arrays["labels"])


class Job(NamedTuple):
    """What `run` needs from a kind of task: the model and data, how to train and score it, what to record."""

    source: Config
    tok: object
    model: nnx.Module
    train_arrays: dict
    evaluate: object  # fit's `evaluate(predict_step, params)` on the validation slice: it chooses the epoch
    primary: str  # the score that picks the best epoch
    settings: dict  # recorded in finetune.json beside the FinetuneConfig
    loss: object = classification_loss
    predict_fn: object = classification_predict
    report: object = None  # `evaluate` on the reported split, called once with the chosen epoch's parameters
    report_split: str = "dev"  # its name in the results (None: `evaluate` reads that split itself, as SQuAD's)


def with_dropout(model_cfg: ModelConfig, cfg: FinetuneConfig) -> ModelConfig:
    return dataclasses.replace(model_cfg, hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)


def classification_job(cfg: FinetuneConfig, data_dir: Path, init: Path, random_init: bool) -> Job:
    task = tasks.get(cfg.task)
    source, tok, model = from_run(init, cfg, lambda m: Classifier(m, len(task.labels), rngs=nnx.Rngs(params=cfg.seed)),
                                  pretrained=not random_init)
    train_arrays, val_arrays, reported = load_splits(cfg, task, data_dir, tok)
    return Job(source, tok, model, train_arrays, scorer(task, val_arrays, cfg.batch_size), task.metrics[0],
               {"labels": list(task.labels), "label_names": list(task.label_names), "pair": task.pair,
                "train_examples": len(train_arrays["labels"]), "validation_examples": len(val_arrays["labels"])},
               report=scorer(task, reported, cfg.batch_size), report_split=task.reported_split)
