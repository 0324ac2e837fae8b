"""Compile time of bert-large's train step against depth, unrolled and with model.scan_layers (+ remat), and the
activation memory XLA reports for each: `python benchmarks/compile_depth.py` (CPU is fine: nothing runs)."""

import argparse
import dataclasses
import time

from jaxbert import config, plan
from machine import cpu_line


def compile_step(layers: int, scan: bool, remat: bool, batch: int) -> tuple[float, float]:
    cfg = config.override(config.preset("bert-large"), [f"model.num_hidden_layers={layers}", "data.max_len=128",
                                                        f"model.scan_layers={scan}", f"model.remat={remat}"])
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=30522))
    start = time.perf_counter()  # tracing and lowering included: what `jaxbert pretrain` pays before step 1
    compiled = plan.lowered_step(cfg, batch).compile()
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    return seconds, memory.temp_size_in_bytes / 2 ** 30 if memory else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=32, help="pairs per step (abstract: nothing is allocated)")
    args = ap.parse_args()
    print(cpu_line())
    print("| layers | layout | compile (s) | activations (GiB) |\n|---|---|---|---|")
    for layers in (2, 6, 24):
        for scan, remat in ((False, False), (True, False), (True, True)):
            seconds, temp = compile_step(layers, scan, remat, args.batch)
            layout = "unrolled" if not scan else "scan + remat" if remat else "scan"
            print(f"| {layers} | {layout} | {seconds:.1f} | {temp:.2f} |", flush=True)


if __name__ == "__main__":
    main()
