"""The device check: what one GPU gives, in at most 8 minutes, as one JSON file. Run it whenever a GPU is lent.

    bash benchmarks/device_check.sh [OUT_DIR]      # the wrapper: the 8-minute limit, the install check

1. The parity tests (transformers, the fused MLM layer, the model's forms) on the device, at the highest matmul
   precision (tests/conftest.py sets it: TF32 would fail their float32 tolerances).
2. W1 (d2l-tiny, batch 512) in pairs/s: jaxbert float32 and bf16, transformers eager and under bf16 autocast on
   the same GPU (`peers.py --device cuda`).
3. bert-base and bert-large at T=128 in sequences/s, bf16: jaxbert and transformers under autocast
   (`base_train.py`), with MFU against the chip's dense bf16 peak (`--peak-tflops`, H100/H200 SXM: 989).

Each part runs under its own time limit and a part that fails is reported, not fatal. The JSON holds
`jax.devices()`, the device memory, the machine line and every table row.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(name: str, args: list[str], limit: int, out: Path, cwd: Path) -> dict:
    started = time.perf_counter()
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=limit)
        rc, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as e:
        rc, stdout, stderr = "timeout", e.stdout or "", e.stderr or ""
        stdout, stderr = (x.decode() if isinstance(x, bytes) else x for x in (stdout, stderr))
    (out / f"{name}.txt").write_text(stdout + "\n--- stderr ---\n" + stderr[-20000:])
    print(f"{name}: rc {rc} in {time.perf_counter() - started:.0f} s", flush=True)
    return {"rc": rc, "seconds": round(time.perf_counter() - started, 1), "rows": table_rows(stdout),
            "tail": (stdout + stderr)[-1500:] if rc else stdout.strip().splitlines()[-1:]}


def table_rows(text: str) -> list[dict]:
    """The Markdown tables a benchmark printed, as one dict per row keyed by its header."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set(line) <= set("|-: "):
            rows.append(dict(zip(header, cells)))
    return rows


def devices() -> dict:
    import jax

    found = jax.devices()
    memory = [d.memory_stats() if hasattr(d, "memory_stats") else None for d in found]
    return {"jax": jax.__version__, "backend": jax.default_backend(), "devices": [str(d) for d in found],
            "device_kind": found[0].device_kind,
            "bytes_limit": [m.get("bytes_limit") if m else None for m in memory]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("device-check"))
    ap.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared" / "data")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the chip's dense bf16 peak")
    ap.add_argument("--base-batch", type=int, default=256)
    ap.add_argument("--large-batch", type=int, default=128)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="where the PyTorch peers run")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per system (W1: twice as many)")
    ap.add_argument("--parts", nargs="+", default=["parity", "w1", "bert_base", "bert_large"])
    ap.add_argument("--slack", type=float, default=1.0,
                    help="multiply every part's time limit (the limits fit one H100/H200 in 8 minutes; a CPU "
                         "needs several times longer)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    py, shared = sys.executable, args.shared.resolve()
    report = {"devices": devices(), "peak_tflops": args.peak_tflops}
    print(json.dumps(report["devices"]), flush=True)
    wiki, vocab = str(shared / "wikitext-2"), str(shared / "bert-base-uncased")
    timing = ["--device", args.device, "--warmup", "3"]
    bf16_pair = ["--systems", "jaxbert-bf16", "transformers-bf16", "--steps", str(args.steps)]
    parts = {
        "parity": ([py, "-m", "pytest", "-q", "-m", "not slow", "tests/test_hf.py", "tests/test_fused_mlm.py",
                    "tests/test_model.py"], 150, HERE.parent),
        "w1": ([py, "peers.py", "--data", wiki, *timing, "--steps", str(2 * args.steps), "--systems", "jaxbert",
                "jaxbert-bf16", "transformers", "transformers-bf16"], 110, HERE),
        "bert_base": ([py, "base_train.py", "--data", wiki, "--vocab", vocab, *timing, "--batch",
                       str(args.base_batch), *bf16_pair], 100, HERE),
        "bert_large": ([py, "base_train.py", "--preset", "bert-large", "--data", wiki, "--vocab", vocab, *timing,
                        "--batch", str(args.large_batch), *bf16_pair], 100, HERE),
    }
    for name, (cmd, limit, cwd) in ((k, v) for k, v in parts.items() if k in args.parts):
        report[name] = run(name, cmd, round(limit * args.slack), args.out, cwd)
        for row in report[name]["rows"]:
            if "GFLOP/s" in row:  # XLA's count of jaxbert's float32 step: the model's FLOPs, for every system
                try:
                    row["MFU"] = float(row["GFLOP/s"]) / (args.peak_tflops * 1e3)
                except ValueError:
                    pass
        (args.out / "device_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v["rows"] for k, v in report.items() if isinstance(v, dict) and "rows" in v}, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # the workers share the GPU one at a time
    main()
