"""What a run shows: the progress bar, `metrics.jsonl`, TensorBoard event files, the loss plot and the closing
summary lines."""

import io
import json
import statistics
import sys
import time
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: nothing global (backend, figure registry) is touched
from tensorboardX import SummaryWriter
from tqdm import tqdm

from jaxbert import storage
from jaxbert.storage import write_atomic


def stage(text: str) -> None:
    """A line on stderr, stamped with the local time, saying what the process is doing before the progress bar
    starts (loading, compiling, fitting a budget)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Reporter:
    """Appends metrics rows, redraws the plot, and keeps the throughput of each logged interval."""

    def __init__(self, metrics_path: Path, plot_path: Path, *, total_steps: int, start_step: int,
                 pair_task: str | None = "NSP", tensorboard_dir: Path | None = None, primary: bool = True):
        """`pair_task` names the sentence-pair objective in the output (NSP or SOP; None for MLM only);
        its metrics keep the `nsp_` keys either way. Scalars also go to TensorBoard event files in
        `tensorboard_dir` (`train/<metric>`, `eval/<metric>`); a resumed run hides the old files' later steps."""
        self.metrics_path, self.plot_path = storage.path(metrics_path), storage.path(plot_path)
        self.pair_task, self.primary = pair_task, primary  # only the primary process writes anything
        self.tb = None if tensorboard_dir is None or not primary else SummaryWriter(
            str(tensorboard_dir), purge_step=start_step + 1 if start_step else None)
        self.rows = self._read_until(start_step) if primary else []
        self.rates: list[float] = []  # sentence pairs/s of each logged interval after the first
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, disable=not primary)

    def _read_until(self, step: int) -> list[dict]:
        """Rows of an earlier attempt up to the resumed step; later ones are dropped (they will be redone)."""
        if not self.metrics_path.exists():
            return []
        rows = [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r["step"] <= step]
        write_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
        return rows

    def train(self, step: int, metrics: dict, pairs_per_sec: float, *, first_interval: bool) -> None:
        if not first_interval:  # the first interval includes compilation
            self.rates.append(pairs_per_sec)
        self._write({"step": step, "split": "train", **metrics, "pairs_per_sec": pairs_per_sec})
        self._scalars("train", step, {**metrics, "pairs_per_sec": pairs_per_sec})
        postfix = {"mlm": f"{metrics['mlm_loss']:.3f}"}
        if self.pair_task:
            postfix[self.pair_task.lower()] = f"{metrics['nsp_loss']:.3f}"
        self.bar.set_postfix(postfix)

    def eval(self, step: int, metrics: dict) -> None:
        self._write({"step": step, "split": "eval", **metrics})
        self._scalars("eval", step, metrics)
        line = f"step {step}: held-out MLM loss {metrics['mlm_loss']:.3f} (acc {metrics['mlm_acc']:.3f})"
        if self.pair_task:
            line += f", {self.pair_task} loss {metrics['nsp_loss']:.3f} (acc {metrics['nsp_acc']:.3f})"
        if self.primary:
            self.bar.write(line)
        self.plot()

    def _scalars(self, split: str, step: int, metrics: dict) -> None:
        if self.tb is not None:
            for name, value in metrics.items():
                self.tb.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        """Write out the event files (also done by `summary`)."""
        if self.tb is not None:
            self.tb.close()

    def _write(self, row: dict) -> None:
        # 7 significant digits, not decimals: early in a long warmup the learning rate is far below 1e-6.
        row = {k: (float(f"{v:.7g}") if isinstance(v, float) else v) for k, v in row.items()}
        self.rows.append(row)
        if not self.primary:
            return
        if storage.is_remote(self.metrics_path):  # a bucket object cannot be appended to: upload it whole
            write_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.rows))
            return
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def plot(self) -> None:
        if not self.primary:
            return
        names = [("mlm", "MLM")] + ([("nsp", self.pair_task)] if self.pair_task else [])
        fig = Figure(figsize=(4.5 * len(names), 3.5))
        axes = fig.subplots(1, len(names), squeeze=False)
        for ax, (name, title) in zip(axes[0], names):
            for split, style in (("train", "-"), ("eval", "o--")):
                rows = [r for r in self.rows if r["split"] == split]
                if rows:
                    ax.plot([r["step"] for r in rows], [r[f"{name}_loss"] for r in rows], style,
                            label="held-out" if split == "eval" else split)
            ax.set(title=f"{title} loss", xlabel="step", ylabel="loss")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=100)
        write_atomic(self.plot_path, png.getvalue())

    def summary(self, devices) -> list[str]:
        """The book's two closing lines, from the last logged training interval and the median throughput."""
        self.bar.close()
        self.close()
        last = next(r for r in reversed(self.rows) if r["split"] == "train")
        rates = self.rates or [last["pairs_per_sec"]]
        losses = f"MLM loss {last['mlm_loss']:.3f}"
        if self.pair_task:
            losses += f", {self.pair_task} loss {last['nsp_loss']:.3f}"
        return [losses,
                f"{statistics.median(rates):.1f} sentence pairs/sec on {devices}"]
