"""The label-efficiency report: does pretraining pay when labels are few? One run against random init and TF-IDF.

    jaxbert transfer RUN_DIR --task imdb --data aclImdb_v1.tar.gz --labels 100 500 --seeds 5

For each label count N, both arms (the run's encoder; the same architecture and tokenizer from random weights)
train on the same class-balanced draw of N examples in the same order, and choose their own learning rate and
epochs from a small grid by the score on a validation slice held out of the rest of the training set (seed 0).
Each arm then fine-tunes with `--seeds` seeds at its choice, and the reported split (IMDb's test reviews,
GLUE's dev set) is scored once per seed with the epoch the validation slice chose. Beside them, the baseline a
practitioner reaches for first: TF-IDF (words and word pairs) with logistic regression, its regularisation
chosen on the same validation slice, trained on the same N examples.

OUT/transfer.json   settings, every choice and every seed's score     OUT/transfer.md   the table
OUT/transfer.png    reported score against labels (log axis), median with the seeds' range
"""

import dataclasses
import json
import statistics
import time
from pathlib import Path

from flax import nnx

from jaxbert.config import FinetuneConfig
from jaxbert.encode import restore_run
from jaxbert.errors import JaxbertError
from jaxbert.finetuning import finetune, tasks

ARMS = ("pretrained", "random")
REPORT = "transfer.json"


def run(run_dir: Path, task_name: str, data: Path, out: Path, *, labels: list[int], seeds: int = 5,
        base: FinetuneConfig | None = None, learning_rates=(1e-3, 3e-3), epochs=(8,),
        log=print) -> dict:
    """Write and return the report; `labels` holds label counts, 0 for all the training examples."""
    out = Path(out)
    if (out / REPORT).exists():
        raise JaxbertError(f"{out} already holds a transfer report; choose another --out")
    if seeds < 1 or not labels or any(n < 0 for n in labels) or not learning_rates or not epochs:
        raise JaxbertError("--seeds must be at least 1, --labels counts (or 'all') and the grids must not be empty")
    task = tasks.get(task_name)
    base = base or FinetuneConfig(**{"task": task_name, "validation": 500, **dict(task.defaults)})
    source, tok, pretrained, _ = restore_run(run_dir)
    finetune.check_max_len(base, source.model, run_dir)
    encoder = nnx.state(pretrained, nnx.Param)
    train_file, reported = task.read_splits(Path(data))  # read before anything trains: a bad path fails now
    reported_arrays = finetune.encode_texts(tok, reported, base.max_len, base.truncation)
    report = {"run": str(run_dir), "task": task_name, "data": str(data), "seeds": seeds,
              "reported_split": task.reported_split, "metric": task.metrics[0], "settings": dataclasses.asdict(base),
              "grid": {"learning_rate": list(learning_rates), "epochs": list(epochs)}, "points": []}
    for n in labels:
        started = time.perf_counter()
        cfg = dataclasses.replace(base, labelled=n)
        train_data, val_data = finetune.split_training_set(cfg, train_file)
        arrays = [finetune.encode_texts(tok, d, cfg.max_len, cfg.truncation) for d in (train_data, val_data)]
        batch = min(cfg.batch_size, len(train_data))
        point = {"labels": len(train_data), "validation": len(val_data)}
        for arm in ARMS:
            def fine_tune(setting: FinetuneConfig, steps=None):
                model = finetune.Classifier(finetune.with_dropout(source.model, setting), len(task.labels),
                                            rngs=nnx.Rngs(params=setting.seed))
                if arm == "pretrained":
                    nnx.update(model.bert, encoder)
                return finetune.fit(setting, model, arrays[0], finetune.scorer(task, arrays[1], setting.batch_size),
                                    task.metrics[0], quiet=True, steps=steps)

            grid = []
            for lr in learning_rates:
                for e in epochs:
                    setting = dataclasses.replace(cfg, learning_rate=lr, epochs=e, batch_size=batch, seed=0)
                    best, _, _ = fine_tune(setting)
                    grid.append({"learning_rate": lr, "epochs": e, "validation": best[f"val_{task.metrics[0]}"]})
                    log(f"  {len(train_data)} labels, {arm}: lr {lr:g}, {e} epochs: validation "
                        f"{task.metrics[0]} {grid[-1]['validation']:.4f} (epoch {best['epoch']})")
            choice = max(grid, key=lambda g: g["validation"])  # the first of the best, in grid order
            scores, steps = [], None
            for seed in range(seeds):  # the seeds share one compiled program: only the seed differs
                setting = dataclasses.replace(cfg, learning_rate=choice["learning_rate"], epochs=choice["epochs"],
                                              batch_size=batch, seed=seed)
                _, params, steps = fine_tune(setting, steps)
                scores.append(finetune.scorer(task, reported_arrays, batch)(steps[1], params)[task.metrics[0]])
                log(f"  {len(train_data)} labels, {arm}, seed {seed}: {task.reported_split} {task.metrics[0]} "
                    f"{scores[-1]:.4f}")
            point[arm] = {"grid": grid, "choice": choice, "scores": scores, **summarize(scores)}
        point["tfidf"] = tfidf_baseline(train_data, val_data, reported, task)
        point["seconds"] = round(time.perf_counter() - started)
        report["points"].append(point)
        log(f"{point['labels']} labels: pretrained {_show(point['pretrained'])}, random init "
            f"{_show(point['random'])}, TF-IDF {100 * point['tfidf']['score']:.1f} ({point['seconds']} s)")
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    (out / "transfer.md").write_text(markdown(report))
    chart(report, out / "transfer.png")
    return report


def tfidf_baseline(train: tasks.TextPairs, val: tasks.TextPairs, reported: tasks.TextPairs, task) -> dict:
    """TF-IDF of words and word pairs (sublinear counts) with logistic regression, C chosen on the validation
    slice from 0.1 to 100; its score on the reported split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    text = lambda d: d.text_a if d.text_b is None else [f"{a} {b}" for a, b in zip(d.text_a, d.text_b)]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x = vectorizer.fit_transform(text(train))
    fits = []
    for c in (0.1, 1.0, 10.0, 100.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(x, train.labels)
        fits.append((task.score(model.predict(vectorizer.transform(text(val))), val.labels)[task.metrics[0]], c,
                     model))
    val_score, c, model = max(fits, key=lambda f: f[0])  # the first of the best, smallest C
    score = task.score(model.predict(vectorizer.transform(text(reported))), reported.labels)[task.metrics[0]]
    return {"C": c, "validation": val_score, "score": score}


def summarize(values: list[float]) -> dict:
    return {"median": statistics.median(values), "mean": statistics.mean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def _show(s: dict) -> str:
    return f"{100 * s['median']:.1f} (mean {100 * s['mean']:.1f} ± {100 * s['sd']:.1f})"


def markdown(report: dict) -> str:
    metric, split = report["metric"], report["reported_split"]
    lines = [f"{report['task']} {split} {metric} (x100) of `{report['run']}`: median (mean ± sd) of "
             f"{report['seeds']} seeds, learning rate and epochs chosen per arm on a validation slice", "",
             "| labels | pretrained | random init | TF-IDF + LR | difference (medians) | choices (lr, epochs) |",
             "|---|---|---|---|---|---|"]
    for p in report["points"]:
        choices = ", ".join(f"{arm} {p[arm]['choice']['learning_rate']:g}/{p[arm]['choice']['epochs']}"
                            for arm in ARMS)
        gap = 100 * (p["pretrained"]["median"] - p["random"]["median"])
        lines.append(f"| {p['labels']:,} | {_show(p['pretrained'])} | {_show(p['random'])} | "
                     f"{100 * p['tfidf']['score']:.1f} | {gap:+.1f} | {choices} |")
    return "\n".join(lines) + "\n"


def chart(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: nothing global is switched

    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    x = [p["labels"] for p in report["points"]]
    for arm, label in (("pretrained", "pretrained"), ("random", "random init")):
        med = [100 * p[arm]["median"] for p in report["points"]]
        low = [m - 100 * min(p[arm]["scores"]) for m, p in zip(med, report["points"])]
        high = [100 * max(p[arm]["scores"]) - m for m, p in zip(med, report["points"])]
        ax.errorbar(x, med, yerr=[low, high], marker="o", capsize=3, label=label)
    ax.plot(x, [100 * p["tfidf"]["score"] for p in report["points"]], marker="s", ls="--", label="TF-IDF + LR")
    ax.set_xscale("log")
    ax.set(xlabel="labelled training examples", ylabel=f"{report['reported_split']} {report['metric']} (x100)",
           title=f"{report['task']}: {report['seeds']} seeds, median and range")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
