"""Fine-tuning: a pretrained encoder plus a small classification head, trained on a task's examples.

    jaxbert finetune --task sst2 --data ../shared/data/glue/SST-2 --init runs/tiny --out runs/sst2
    jaxbert finetune ... --random-init     # the same architecture and tokenizer without pretraining: the control

The head is `transformers.BertForSequenceClassification`'s: dropout and a dense layer on the pooled `<cls>`
vector. Training is AdamW with linear warmup and decay (clipped at norm 1); the dev set is scored after every
epoch and the best epoch's parameters (by the task's first metric) are what the output directory keeps.

OUT/finetune.json   the fine-tuning settings, the task's labels and the source run
OUT/config.json     the encoder's config (the source run's), OUT/tokenizer.json its tokenizer
OUT/checkpoints/    orbax: the best epoch's parameters      OUT/metrics.jsonl: one row per epoch
"""

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from jaxbert import checkpoint, optim, rundir, tasks
from jaxbert import tokenization
from jaxbert.config import Config, FinetuneConfig, ModelConfig, OptimConfig
from jaxbert.encode import restore_run
from jaxbert.errors import JaxbertError
from jaxbert.model import BertForPreTraining, Dropout

SETTINGS = "finetune.json"


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


def encode_texts(tok, data: tasks.TextPairs, max_len: int) -> dict[str, np.ndarray]:
    """Fixed-shape arrays: ids, segment ids (B is segment 1) and valid lengths, truncated and padded."""
    tok = tok.from_str(tok.to_str())  # a copy: truncation and padding are settings of the tokenizer
    pad = tokenization.special_ids(tok).pad
    tok.enable_truncation(max_len)
    tok.enable_padding(pad_id=pad, pad_token=tok.id_to_token(pad), length=max_len)
    inputs = list(zip(data.text_a, data.text_b)) if data.text_b is not None else data.text_a
    encs = tok.encode_batch(inputs)
    return {"input_ids": np.array([e.ids for e in encs], np.int32),
            "segment_ids": np.array([e.type_ids for e in encs], np.int32),
            "valid_lens": np.array([sum(e.attention_mask) for e in encs], np.int32),
            "labels": data.labels.astype(np.int32)}


def classifier_from_run(run_dir: Path, num_labels: int, *, seed: int, pretrained: bool = True):
    """(source config, tokenizer, Classifier) whose encoder holds the run's weights (or fresh ones)."""
    cfg, tok, pretrained_model, _ = restore_run(run_dir)
    model = Classifier(cfg.model, num_labels, rngs=nnx.Rngs(params=seed))
    if pretrained:
        nnx.update(model.bert, nnx.state(pretrained_model, nnx.Param))
    return cfg, tok, model


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


def predict(predict_step, params, arrays: dict[str, np.ndarray], batch_size: int):
    """`predict_step`'s output (an array or a tuple of arrays) for every row; the last batch is padded to the
    full size (one compiled shape)."""
    n, out = len(arrays["input_ids"]), []
    for start in range(0, n, batch_size):
        rows = np.minimum(np.arange(start, start + batch_size), n - 1)
        out.append(jax.device_get(predict_step(params, {k: v[rows] for k, v in arrays.items()})))  # host sync
    return jax.tree.map(lambda *parts: np.concatenate(parts)[:n], *out)


def load_splits(cfg: FinetuneConfig, task: tasks.Task, data_dir: Path, tok):
    """(train arrays, dev arrays) of `data_dir`/{train,dev}.tsv, the training set capped as `cfg` says."""
    train_data, dev_data = (task.read(Path(data_dir) / f"{split}.tsv") for split in ("train", "dev"))
    if cfg.max_train_examples:  # before tokenizing: the cap exists to make quick runs quick
        keep = slice(0, cfg.max_train_examples)
        train_data = tasks.TextPairs(train_data.text_a[keep], train_data.text_b and train_data.text_b[keep],
                                     train_data.labels[keep])
    train_arrays, dev_arrays = (encode_texts(tok, d, cfg.max_len) for d in (train_data, dev_data))
    if len(train_arrays["labels"]) < cfg.batch_size:
        raise JaxbertError(f"{len(train_arrays['labels'])} training examples are fewer than one batch of "
                           f"{cfg.batch_size}; lower --batch-size")
    return train_arrays, dev_arrays


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
        on_epoch=None, quiet: bool = False, loss=classification_loss, predict_fn=classification_predict):
    """Train `model`, scoring after each epoch; (best epoch's row, its parameters, the compiled steps).

    `evaluate(predict_step, params)` gives the epoch's dev scores, and the first epoch with the highest
    `primary` score is the best. `steps` reuses the compiled (train_step, predict_step) of an earlier call with
    the same shapes and settings (default: classification's); `on_epoch(row, state, is_best)` runs after each.
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
        scores = evaluate(predict_step, state.params)
        row = {"epoch": epoch, "step": int(state.step), "train_loss": float(np.mean(jax.device_get(losses))),
               **{f"dev_{k}": v for k, v in scores.items()}}
        if not quiet:
            bar.write(f"epoch {epoch}: train loss {row['train_loss']:.4f}, dev "
                      + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        is_best = best is None or scores[primary] > best[f"dev_{primary}"]
        if is_best:
            best, best_params = row, jax.tree.map(jnp.copy, state.params)  # the next step donates the state
        if on_epoch:
            on_epoch(row, state, is_best)
    bar.close()
    return best, best_params, (train_step, predict_step)


def scorer(task: tasks.Task, dev_arrays, batch_size: int):
    """`fit`'s `evaluate` for a classification task: its metrics on the dev arrays."""
    return lambda predict_step, params: task.score(predict(predict_step, params, dev_arrays, batch_size),
                                                   dev_arrays["labels"])


class Job(NamedTuple):
    """What `run` needs from a kind of task: the model and data, how to train and score it, what to record."""

    source: Config
    tok: object
    model: nnx.Module
    train_arrays: dict
    evaluate: object  # fit's `evaluate(predict_step, params)`
    primary: str  # the dev score that picks the best epoch
    settings: dict  # recorded in finetune.json beside the FinetuneConfig
    loss: object = classification_loss
    predict_fn: object = classification_predict


def classification_job(cfg: FinetuneConfig, data_dir: Path, init: Path, random_init: bool) -> Job:
    task = tasks.get(cfg.task)
    source, tok, model = classifier_from_run(init, len(task.labels), seed=cfg.seed, pretrained=not random_init)
    train_arrays, dev_arrays = load_splits(cfg, task, data_dir, tok)
    return Job(source, tok, model, train_arrays, scorer(task, dev_arrays, cfg.batch_size), task.metrics[0],
               {"labels": list(task.labels), "label_names": list(task.label_names), "pair": task.pair})


def run(cfg: FinetuneConfig, data_dir: Path, init: Path, out: Path, *, random_init: bool = False) -> dict:
    """Fine-tune and keep the best epoch; returns its dev metrics."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise JaxbertError(f"{out} is not empty; choose a new --out")
    if cfg.task == "squad":
        from jaxbert import qa
        job = qa.job(cfg, data_dir, init, random_init)
    else:
        job = classification_job(cfg, data_dir, init, random_init)

    out.mkdir(parents=True, exist_ok=True)
    settings = {**dataclasses.asdict(cfg), **job.settings, "init": str(init), "random_init": random_init}
    (out / SETTINGS).write_text(json.dumps(settings, indent=2) + "\n")
    job.source.save(out / rundir.CONFIG)
    job.tok.save(str(out / rundir.TOKENIZER))
    mngr = checkpoint.manager(out)

    def keep(row, state, is_best):
        with open(out / rundir.METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
        if is_best:
            checkpoint.save(mngr, int(state.step), state.params, state.opt_state)

    best, _, _ = fit(cfg, job.model, job.train_arrays, job.evaluate, job.primary, on_epoch=keep, loss=job.loss,
                     predict_fn=job.predict_fn)
    mngr.wait_until_finished()
    return best


# --- using a fine-tuned model -----------------------------------------------------------------------------

def read_settings(out_dir: Path) -> dict:
    """A fine-tuned model's finetune.json, or a clear error if `out_dir` is not one."""
    if not (Path(out_dir) / SETTINGS).is_file():
        raise JaxbertError(f"{out_dir} holds no {SETTINGS}; pass a directory written by jaxbert finetune")
    return json.loads((Path(out_dir) / SETTINGS).read_text())


def restore(out_dir: Path):
    """(settings, source config, tokenizer, model with the kept epoch's parameters) of a fine-tuned model: a
    `Classifier`, or a `qa.SpanModel` for SQuAD."""
    out_dir, settings = Path(out_dir), read_settings(out_dir)
    cfg, tok = Config.load(out_dir / rundir.CONFIG), tokenization.load(out_dir / rundir.TOKENIZER)
    if settings["task"] == "squad":
        from jaxbert.qa import SpanModel
        make = lambda: SpanModel(cfg.model, rngs=nnx.Rngs(0))
    else:
        make = lambda: Classifier(cfg.model, len(settings["labels"]), rngs=nnx.Rngs(0))
    abstract = nnx.eval_shape(make)
    graphdef, abstract_params = nnx.split(abstract, nnx.Param)
    step = rundir.latest_step(out_dir)
    if step is None:
        raise JaxbertError(f"{out_dir} holds no checkpoint; its fine-tuning did not finish, run it again")
    params, _ = checkpoint.restore(checkpoint.manager(out_dir), step, abstract_params)
    return settings, cfg, tok, nnx.merge(graphdef, params)


def classify(out_dir: Path, texts: list[str] | list[tuple[str, str]], batch_size: int = 32):
    """(label name, probability) for each text (or (A, B) pair), in order."""
    settings, _, tok, model = restore(out_dir)
    pairs = [t if isinstance(t, tuple) else (t, None) for t in texts]
    if any((b is None) == settings["pair"] for _, b in pairs):
        raise JaxbertError(f"the {settings['task']} model classifies " + (
            "sentence pairs: give each as A<TAB>B" if settings["pair"] else "single sentences: give no pair"))
    data = tasks.TextPairs([a for a, _ in pairs], [b for _, b in pairs] if settings["pair"] else None,
                           np.zeros(len(pairs), np.int32))
    arrays = encode_texts(tok, data, settings["max_len"])
    graphdef, params = nnx.split(model, nnx.Param)
    probs = jax.jit(lambda p, b: jax.nn.softmax(nnx.merge(graphdef, p)(b["input_ids"], b["segment_ids"],
                                                                        b["valid_lens"]), -1))
    out = np.concatenate([np.asarray(probs(params, {k: v[i:i + batch_size] for k, v in arrays.items()}))
                          for i in range(0, len(pairs), batch_size)])
    return [(settings["label_names"][k], float(p[k])) for p, k in zip(out, out.argmax(-1))]
