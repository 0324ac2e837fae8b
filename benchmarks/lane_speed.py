"""The book's data path before and after a change: WikiText-2 to every training and held-out example, two source
trees side by side, each run in fresh processes taking turns.

    git worktree add /tmp/old f7466e5          # the tree to compare against (here: before the one-lane change)
    python benchmarks/lane_speed.py ../shared/data/wikitext-2 7 --old /tmp/old/src --new src

Per tree: the median over the processes of the work (after imports) and of the whole process. A tree whose
`load_wikitext2` returns rows built on demand has them all built, so both do the book's whole work.
"""
import statistics
import subprocess
import sys
CHILD = r'''
import time, sys
t0 = time.perf_counter()
import numpy as np
from jaxbert import config, data
imported = time.perf_counter()
_, tr, ev = data.load_wikitext2(sys.argv[1], config.preset("d2l-tiny").data)
if hasattr(tr, "take") and not hasattr(tr, "arrays"):
    for s in (tr, ev):
        s.take(np.arange(len(s)))
print(time.perf_counter() - imported, time.perf_counter() - t0, len(tr))
'''
import argparse  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("data")
parser.add_argument("rounds", type=int)
parser.add_argument("--old", required=True)
parser.add_argument("--new", required=True)
args = parser.parse_args()
trees = {f"old ({args.old})": args.old, f"new ({args.new})": args.new}
folder = args.data
times = {k: [] for k in trees}
for r in range(args.rounds):
    for name, src in (list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]):
        out = subprocess.run([sys.executable, "-c", CHILD, folder], env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, check=True).stdout.split()
        times[name].append((float(out[0]), float(out[1]), int(out[2])))
for name, t in times.items():
    print(name, "work median %.3f s, process median %.3f s, examples %d" % (
        statistics.median(x[0] for x in t), statistics.median(x[1] for x in t), t[0][2]), [round(x[0], 3) for x in t])
