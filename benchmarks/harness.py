"""What every benchmark here shares: the machine it ran on, medians of repeated timings, a command run in a fresh
process, and Markdown table rows. It imports nothing heavy: prepare_vs_d2l.py times its children's start-up."""

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def machine() -> str:
    """lscpu's model name and CPU count, and which of avx2, avx512f, avx512_bf16 and AMX its flags list."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    found = [f for f in ("avx2", "avx512f", "avx512_bf16") if f in flags] + (
        ["amx"] if any(f.startswith("amx") for f in flags) else [])
    return (f"{fields.get('Model name', 'unknown').strip()}, {fields.get('CPU(s)', '?').strip()} CPU(s), flags: "
            f"{' '.join(found) or 'none of avx2 avx512f avx512_bf16 amx'}")


def timed(fn, items) -> tuple[list[float], list]:
    """`fn(item)` for each item in turn: the wall time of each call, and what each returned. `fn` must block until
    its work is done (e.g. `jax.block_until_ready`)."""
    times, results = [], []
    for item in items:
        start = time.perf_counter()
        results.append(fn(item))
        times.append(time.perf_counter() - start)
    return times, results


def median_seconds(fn, repeats: int = 7, warmup: int = 1) -> float:
    """The median wall time of `repeats` calls of the blocking `fn()` after `warmup` calls (compilation)."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed(lambda _: fn(), range(repeats))[0])


def fresh(args: list[str]) -> dict | None:
    """Run `python ARGS` in a fresh process under GNU time, whose peak RSS counts the child alone (the child's own
    rusage can include the launching process's). Returns its JSON output lines merged into one dict, with `stdout`,
    `first_line_s` (from the start to its first line of output), `wall_s` (to its exit) and `peak_rss_mb`; or None,
    its error printed, if it failed."""
    # stderr goes to a file, so that a chatty child cannot block on a full pipe
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp, "err"), "w+") as err:
        start = time.perf_counter()
        with subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", Path(tmp, "rss"), sys.executable, *args],
                              stdout=subprocess.PIPE, stderr=err, text=True) as proc:
            stdout = proc.stdout.readline()
            first_line_s = time.perf_counter() - start
            stdout += proc.stdout.read()
        wall_s = time.perf_counter() - start
        if proc.returncode:
            err.seek(0)
            print(f"{' '.join(args)}: failed\n{err.read()[-2000:]}", file=sys.stderr)
            return None
        peak_rss_mb = int(Path(tmp, "rss").read_text().split()[-1]) / 1024
    out = {"stdout": stdout, "first_line_s": first_line_s, "wall_s": wall_s, "peak_rss_mb": peak_rss_mb}
    for line in stdout.splitlines():
        if line.startswith("{") and line.endswith("}"):  # a JSON object on one line (not pretty-printed JSON)
            out |= json.loads(line)
    return out


def table(*columns: str) -> None:
    print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns), flush=True)


def row(*cells) -> None:
    print("| " + " | ".join(map(str, cells)) + " |", flush=True)
