"""GLUE-lite: is a pretrained encoder worth fine-tuning? SST-2, MRPC, RTE and CoLA, each fine-tuned from the run
and from random initialisation (the same architecture and tokenizer, no pretraining) over several seeds.

    jaxbert glue RUN_DIR --data ../shared/data/glue [--out REPORT_DIR] [--seeds 5]

Every run of a task uses the same fixed settings (`SETTINGS`, below) and the same seeds for both
initialisations; the seed sets the head's (and, for the control, the encoder's) initial weights, dropout and
the order of examples. The epoch is chosen on a validation slice held out of the training file; a task's score
is its dev-set metric with that epoch's parameters, scored once, in points (x100), reported as mean ± sample
standard deviation over the seeds.

REPORT_DIR/glue.md    the table      REPORT_DIR/glue.json   settings, every seed's scores, the summary
REPORT_DIR/glue.png   a bar chart (mean with ± sd error bars)
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

FOLDERS = {"sst2": "SST-2", "mrpc": "MRPC", "rte": "RTE", "cola": "CoLA"}

# Fixed for every run, chosen so that the four tasks over 5 seeds and both initialisations fit in about half an
# hour on 2 CPU cores for d2l-tiny (a step costs about as many tokens as it holds, so windows are cut to what
# the task needs): SST-2 48 tokens (99% of dev sentences fit), its first 8,000 of 67,349 training sentences and
# 2 epochs; CoLA 32 tokens (99% fit); MRPC and RTE 64 tokens for the pair (90% of MRPC fits whole, RTE's long
# premises are cut). The dev sets are whole. Learning rate 2e-4 with 10% warmup, batch 32.
SETTINGS = {
    "sst2": FinetuneConfig(task="sst2", max_len=48, epochs=2, learning_rate=2e-4, max_train_examples=8000),
    "mrpc": FinetuneConfig(task="mrpc", max_len=64, epochs=3, learning_rate=2e-4),
    "rte": FinetuneConfig(task="rte", max_len=64, epochs=3, learning_rate=2e-4),
    "cola": FinetuneConfig(task="cola", max_len=32, epochs=3, learning_rate=2e-4),
}
INITS = ("pretrained", "random")
REPORT = "glue.json"


def run(run_dir: Path, data_dir: Path, out: Path, *, seeds: int = 5, task_names=tuple(FOLDERS),
        settings: dict[str, FinetuneConfig] | None = None, log=print) -> dict:
    """Fine-tune each task from the run and from random init with seeds 0..seeds-1; write and return the report."""
    settings = {**SETTINGS, **(settings or {})}
    out = Path(out)
    if (out / REPORT).exists():
        raise JaxbertError(f"{out} already holds a GLUE-lite report; choose another --out")
    if seeds < 1:
        raise JaxbertError(f"--seeds {seeds} must be at least 1")
    unknown = [t for t in task_names if t not in FOLDERS]
    if unknown:
        raise JaxbertError(f"unknown GLUE-lite task(s) {unknown}; choose from {list(FOLDERS)}")
    source, tok, pretrained, _ = restore_run(run_dir)
    encoder = nnx.state(pretrained, nnx.Param)
    splits = {}  # read and tokenized before anything is trained: a bad folder fails in seconds, not minutes
    for name in task_names:
        folder = Path(data_dir) / FOLDERS[name]
        if not folder.is_dir():
            raise JaxbertError(f"{folder} does not exist; --data must hold the GLUE folders {list(FOLDERS.values())}")
        splits[name] = finetune.load_splits(settings[name], tasks.get(name), folder, tok)

    report = {"run": str(run_dir), "data": str(data_dir), "seeds": seeds, "preset": source.preset,
              "settings": {n: dataclasses.asdict(settings[n]) for n in task_names}, "tasks": {}}
    compiled = {}
    for name in task_names:
        task, cfg, (train_arrays, val_arrays, dev_arrays) = tasks.get(name), settings[name], splits[name]
        started, scores = time.perf_counter(), {init: [] for init in INITS}
        shapes = (len(task.labels), len(train_arrays["labels"]), dataclasses.replace(cfg, task="", seed=0))
        steps = compiled.get(shapes)  # tasks with the same shapes and settings share one compiled program
        for init in INITS:
            for seed in range(seeds):
                model = finetune.Classifier(finetune.with_dropout(source.model, cfg), len(task.labels),
                                            rngs=nnx.Rngs(params=seed))
                if init == "pretrained":
                    nnx.update(model.bert, encoder)
                _, params, steps = finetune.fit(dataclasses.replace(cfg, seed=seed), model, train_arrays,
                                                finetune.scorer(task, val_arrays, cfg.batch_size), task.metrics[0],
                                                steps=steps, quiet=True)
                dev = finetune.scorer(task, dev_arrays, cfg.batch_size)(steps[1], params)  # once, at the end
                scores[init].append({m: 100 * dev[m] for m in task.metrics})
        compiled[shapes] = steps
        entry = {"metric": task.metrics[0], "seconds": round(time.perf_counter() - started, 1), "scores": scores,
                 **{init: summarize([s[task.metrics[0]] for s in scores[init]]) for init in INITS}}
        report["tasks"][name] = entry
        log(f"{name}: {entry['metric']} pretrained {_pm(entry['pretrained'])}, random init "
            f"{_pm(entry['random'])} ({entry['seconds']:.0f} s)")
    gaps = [e["pretrained"]["mean"] - e["random"]["mean"] for e in report["tasks"].values()]
    report["mean_gap"] = round(sum(gaps) / len(gaps), 2)
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    (out / "glue.md").write_text(markdown(report))
    chart(report, out / "glue.png")
    return report


def summarize(values: list[float]) -> dict:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.mean(values), 2), "sd": round(sd, 2)}


def _pm(s: dict) -> str:
    return f"{s['mean']:.1f} ± {s['sd']:.1f}"


def markdown(report: dict) -> str:
    lines = [f"GLUE-lite dev scores (x100) of `{report['run']}` over {report['seeds']} seeds, mean ± sd", "",
             "| task | metric | pretrained | random init | difference |", "|---|---|---|---|---|"]
    for name, e in report["tasks"].items():
        gap = e["pretrained"]["mean"] - e["random"]["mean"]
        lines.append(f"| {FOLDERS[name]} | {e['metric']} | {_pm(e['pretrained'])} | {_pm(e['random'])} | "
                     f"{gap:+.1f} |")
    lines += ["", f"Mean difference: {report['mean_gap']:+.1f} points."]
    return "\n".join(lines) + "\n"


def chart(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: nothing global is switched

    names = list(report["tasks"])
    fig = Figure(figsize=(1.6 * len(names) + 2, 3.5))
    ax = fig.subplots()
    for k, init in enumerate(INITS):
        entries = [report["tasks"][n][init] for n in names]
        ax.bar([i + (k - 0.5) * 0.38 for i in range(len(names))], [e["mean"] for e in entries], 0.38,
               yerr=[e["sd"] for e in entries], capsize=3, label="pretrained" if k == 0 else "random init")
    ax.set_xticks(range(len(names)), [f"{FOLDERS[n]}\n({report['tasks'][n]['metric']})" for n in names])
    ax.set(ylabel="dev score (x100)", title=f"GLUE-lite, {report['seeds']} seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
