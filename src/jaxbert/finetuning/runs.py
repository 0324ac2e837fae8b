"""A fine-tuning output directory: `run` makes one (a classification task, or SQuAD's spans), `restore`,
`classify` and `answer` use one.

    jaxbert finetune --task sst2 --data ../shared/data/glue/SST-2 --init runs/tiny --out runs/sst2
    echo "a moving film" | jaxbert predict runs/sst2

OUT/finetune.json   the fine-tuning settings, the task's labels and the source run
OUT/config.json     the encoder's config (the source run's), OUT/tokenizer.json its tokenizer
OUT/checkpoints/    orbax: the chosen epoch's parameters    OUT/metrics.jsonl: one row per epoch
OUT/scores.json     the chosen epoch's row and the reported split's scores
"""

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

from jaxbert import rundir, storage
from jaxbert.config import Config, FinetuneConfig
from jaxbert.data import tokenization
from jaxbert.errors import JaxbertError
from jaxbert.finetuning import finetune, qa, squad, tasks
from jaxbert.training import checkpoint

SETTINGS = rundir.FINETUNED
SCORES = "scores.json"


def run(cfg: FinetuneConfig, data_dir: Path, init: Path, out: Path, *, random_init: bool = False) -> dict:
    """Fine-tune, keep the epoch that scores best on the validation slice and score the reported split with
    it, once; returns the chosen epoch's row with those scores (`dev_...` or `test_...`)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise JaxbertError(f"{out} is not empty; choose a new --out")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        rundir.lock(out)  # held to the end: a second `finetune --out` of the same directory is refused at once
    except JaxbertError:
        if created:
            out.rmdir()
        raise
    try:
        return _run(cfg, data_dir, init, out, random_init=random_init)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):  # refused before writing: leave none
            out.rmdir()
        raise
    finally:
        rundir.release(out)


def _run(cfg: FinetuneConfig, data_dir: Path, init: Path, out: Path, *, random_init: bool) -> dict:
    if cfg.task == "squad":
        job = qa.job(cfg, data_dir, init, random_init)
    else:
        job = finetune.classification_job(cfg, data_dir, init, random_init)

    settings = {**dataclasses.asdict(cfg), **job.settings, "init": str(init), "random_init": random_init}
    (out / SETTINGS).write_text(json.dumps(settings, indent=2) + "\n")
    job.source.save(out / rundir.CONFIG)
    tokenization.save(job.tok, out / rundir.TOKENIZER)
    mngr = checkpoint.manager(out)

    kept = {}  # the row of the epoch whose parameters are checkpointed

    def keep(row, state, is_best):
        with open(out / rundir.METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
        if is_best:
            checkpoint.save(mngr, int(state.step), state.params, state.opt_state)
            kept.update(row)

    try:
        best, params, (_, predict_step) = finetune.fit(
            cfg, job.model, job.train_arrays, job.evaluate, job.primary, on_epoch=keep, loss=job.loss,
            predict_fn=job.predict_fn, split="val" if job.report else job.report_split)
    except finetune.NonFinite as e:
        mngr.wait_until_finished()
        if rundir.latest_step(out) is None:  # nothing worth keeping: leave no half-made model behind
            shutil.rmtree(out)
            raise finetune.NonFinite(f"{e}; nothing was kept") from None
        # A finished model (scores.json written last), stopped early: the best epoch before the failure.
        (out / SCORES).write_text(json.dumps({**kept, "stopped": str(e)}, indent=2) + "\n")
        raise finetune.NonFinite(f"{e}; the best epoch before it is kept in {out}") from None
    mngr.wait_until_finished()
    if job.report:
        best = {**best, **{f"{job.report_split}_{k}": v for k, v in job.report(predict_step, params).items()}}
    (out / SCORES).write_text(json.dumps(best, indent=2) + "\n")  # last: its presence says the run finished
    return best


# --- using a fine-tuned model -----------------------------------------------------------------------------

def read_settings(out_dir: Path) -> dict:
    """A fine-tuned model's finetune.json, or a clear error if `out_dir` is not one."""
    out_dir = storage.path(out_dir)
    rundir.refuse_empty(out_dir)
    if not (out_dir / SETTINGS).is_file():
        raise JaxbertError(f"{out_dir} holds no {SETTINGS}; pass a directory written by jaxbert finetune")
    return json.loads((out_dir / SETTINGS).read_text())


def restore(out_dir: Path):
    """(settings, source config, tokenizer, model with the kept epoch's parameters) of a fine-tuned model: a
    `Classifier`, or a `qa.SpanModel` for SQuAD."""
    out_dir, settings = storage.path(out_dir), read_settings(out_dir)
    cfg, tok = Config.load(out_dir / rundir.CONFIG), tokenization.load(out_dir / rundir.TOKENIZER)
    if settings["task"] == "squad":
        make = lambda: qa.SpanModel(cfg.model, rngs=nnx.Rngs(0))
    else:
        make = lambda: finetune.Classifier(cfg.model, len(settings["labels"]), rngs=nnx.Rngs(0))
    abstract = nnx.eval_shape(make)
    graphdef, abstract_params = nnx.split(abstract, nnx.Param)
    step = rundir.latest_step(out_dir)
    if step is None or not (out_dir / SCORES).is_file():
        raise JaxbertError(f"{out_dir} holds a fine-tuning that did not finish (no {SCORES}; it was stopped or "
                           "killed); run jaxbert finetune again into a new --out")
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
    arrays = finetune.encode_texts(tok, data, settings["max_len"], settings.get("truncation", "head"))  # older: head
    graphdef, params = nnx.split(model, nnx.Param)
    probs = jax.jit(lambda p, b: jax.nn.softmax(nnx.merge(graphdef, p)(b["input_ids"], b["segment_ids"],
                                                                        b["valid_lens"]), -1))
    out = np.concatenate([np.asarray(probs(params, {k: v[i:i + batch_size] for k, v in arrays.items()}))
                          for i in range(0, len(pairs), batch_size)])
    return [(settings["label_names"][k], float(p[k])) for p, k in zip(out, out.argmax(-1))]


def answer(out_dir: Path, pairs: list[tuple[str, str]], batch_size: int = 32) -> list[str]:
    """The answer span of each (question, context), cut from the context."""
    settings, _, tok, model = restore(out_dir)
    cfg = FinetuneConfig(**{k: v for k, v in settings.items() if k in FinetuneConfig.__dataclass_fields__})
    examples = [squad.Example(str(i), q, c, (), ()) for i, (q, c) in enumerate(pairs)]
    feats = squad.features(examples, tok, train=False, **qa.windows(cfg))
    graphdef, params = nnx.split(model, nnx.Param)
    _, predict_step = finetune.make_steps(graphdef, optax.identity(), qa.span_loss, qa.span_predict)
    start, end = finetune.predict(predict_step, params, {k: feats[k] for k in qa.INPUTS}, batch_size)
    predictions = squad.postprocess(examples, feats, np.asarray(start), np.asarray(end))
    return [predictions[e.id] for e in examples]
