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

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from jaxbert import checkpoint, optim, rundir, tasks
from jaxbert import tokenizer as tokenizers
from jaxbert.config import Config, FinetuneConfig, ModelConfig, OptimConfig
from jaxbert.encode import restore_run
from jaxbert.errors import JaxbertError
from jaxbert.model import BertForPreTraining

SETTINGS = "finetune.json"


class Classifier(nnx.Module):
    """The encoder and pooler of `BertForPreTraining`, then dropout and a dense layer to the labels."""

    def __init__(self, cfg: ModelConfig, num_labels: int, *, rngs: nnx.Rngs):
        self.bert = BertForPreTraining(cfg, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.hidden_dropout_prob)
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
    pad = tokenizers.special_ids(tok).pad
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


def make_steps(graphdef, tx):
    """(train_step, predict_step), jitted once; the dropout key is an argument, so seeds share the programs."""
    def loss_fn(params, batch, key):
        model = nnx.merge(graphdef, params)
        logits = model(batch["input_ids"], batch["segment_ids"], batch["valid_lens"], deterministic=False,
                       rngs=nnx.Rngs(dropout=key))
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["labels"]).mean()

    def train_step(state: State, batch, dropout_key):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, jax.random.fold_in(dropout_key, state.step))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state), loss

    def predict_step(params, batch):
        model = nnx.merge(graphdef, params)
        return model(batch["input_ids"], batch["segment_ids"], batch["valid_lens"]).argmax(-1)

    return jax.jit(train_step, donate_argnums=0), jax.jit(predict_step)


def predict(predict_step, params, arrays: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    """Labels of every example; the last batch is padded to the full size (one compiled shape)."""
    n, out = len(arrays["labels"]), []
    for start in range(0, n, batch_size):
        rows = np.minimum(np.arange(start, start + batch_size), n - 1)
        out.append(np.asarray(predict_step(params, {k: v[rows] for k, v in arrays.items()})))  # host sync
    return np.concatenate(out)[:n]


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


def optimizer(cfg: FinetuneConfig, num_examples: int) -> tuple[optax.GradientTransformation, int]:
    """AdamW with linear warmup over `warmup_fraction` of the steps and linear decay; (tx, total steps)."""
    total = num_examples // cfg.batch_size * cfg.epochs
    return optim.optimizer(OptimConfig(learning_rate=cfg.learning_rate, warmup_steps=int(cfg.warmup_fraction * total),
                                       weight_decay=cfg.weight_decay), total), total


def fit(cfg: FinetuneConfig, task: tasks.Task, model: Classifier, train_arrays, dev_arrays, *, steps=None,
        on_epoch=None, quiet: bool = False):
    """Train `model`, score dev after each epoch; (best epoch's row, its parameters, the compiled steps).

    `steps` reuses the compiled (train_step, predict_step) of an earlier call with the same shapes and
    settings; `on_epoch(row, state)` is called after each epoch with its row and whether it is the best so far.
    """
    n = len(train_arrays["labels"])
    per_epoch = n // cfg.batch_size
    tx, total = optimizer(cfg, n)
    graphdef, params = nnx.split(model, nnx.Param)
    params = jax.tree.map(jnp.copy, params)  # the steps donate the state: the model's own arrays stay intact
    state = State(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
    train_step, predict_step = steps or make_steps(graphdef, tx)
    dropout_key, best, best_params = jax.random.key(cfg.seed), None, None
    bar = tqdm(total=total, unit="step", dynamic_ncols=True, disable=quiet)
    for epoch in range(1, cfg.epochs + 1):
        order, losses = np.random.default_rng([cfg.seed, epoch]).permutation(n), []
        for i in range(per_epoch):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            state, loss = train_step(state, {k: v[idx] for k, v in train_arrays.items()}, dropout_key)
            losses.append(loss)
            bar.update()
        scores = task.score(predict(predict_step, state.params, dev_arrays, cfg.batch_size), dev_arrays["labels"])
        row = {"epoch": epoch, "step": int(state.step), "train_loss": float(np.mean(jax.device_get(losses))),
               **{f"dev_{k}": v for k, v in scores.items()}}
        if not quiet:
            bar.write(f"epoch {epoch}: train loss {row['train_loss']:.4f}, dev "
                      + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        is_best = best is None or scores[task.metrics[0]] > best[f"dev_{task.metrics[0]}"]
        if is_best:
            best, best_params = row, jax.tree.map(jnp.copy, state.params)  # the next step donates the state
        if on_epoch:
            on_epoch(row, state, is_best)
    bar.close()
    return best, best_params, (train_step, predict_step)


def run(cfg: FinetuneConfig, data_dir: Path, init: Path, out: Path, *, random_init: bool = False) -> dict:
    """Fine-tune and keep the best epoch; returns its dev metrics."""
    task, out = tasks.get(cfg.task), Path(out)
    if out.exists() and any(out.iterdir()):
        raise JaxbertError(f"{out} is not empty; choose a new --out")
    source, tok, model = classifier_from_run(init, len(task.labels), seed=cfg.seed, pretrained=not random_init)
    train_arrays, dev_arrays = load_splits(cfg, task, data_dir, tok)

    out.mkdir(parents=True, exist_ok=True)
    settings = {**dataclasses.asdict(cfg), "labels": list(task.labels), "label_names": list(task.label_names),
                "pair": task.pair, "init": str(init), "random_init": random_init}
    (out / SETTINGS).write_text(json.dumps(settings, indent=2) + "\n")
    source.save(out / rundir.CONFIG)
    tok.save(str(out / rundir.TOKENIZER))
    mngr = checkpoint.manager(out)

    def keep(row, state, is_best):
        with open(out / rundir.METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
        if is_best:
            checkpoint.save(mngr, int(state.step), state.params, state.opt_state)

    best, _, _ = fit(cfg, task, model, train_arrays, dev_arrays, on_epoch=keep)
    mngr.wait_until_finished()
    return best


# --- using a fine-tuned model -----------------------------------------------------------------------------

def restore(out_dir: Path):
    """(settings, source config, tokenizer, Classifier with the kept epoch's parameters) of a fine-tuned model."""
    out_dir = Path(out_dir)
    if not (out_dir / SETTINGS).is_file():
        raise JaxbertError(f"{out_dir} holds no {SETTINGS}; pass a directory written by jaxbert finetune")
    settings = json.loads((out_dir / SETTINGS).read_text())
    cfg, tok = Config.load(out_dir / rundir.CONFIG), tokenizers.load(out_dir / rundir.TOKENIZER)
    abstract = nnx.eval_shape(lambda: Classifier(cfg.model, len(settings["labels"]), rngs=nnx.Rngs(0)))
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
