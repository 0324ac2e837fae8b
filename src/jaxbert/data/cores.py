"""How many threads the compiled data passes split their work into: the cores this process may use (Linux
affinity where the platform reports it, else the machine's count), at most 4, since beyond that the passes are
bound by memory and by the Python work between them."""

import os

THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
