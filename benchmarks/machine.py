"""The machine a benchmark ran on, for its table (no JAX import: the prepare benchmarks time their imports)."""

import subprocess


def cpu_line() -> str:
    """lscpu's model name, and whether AVX-512 (avx512f, avx512_bf16) and AMX appear among its flags."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    found = [f for f in ("avx2", "avx512f", "avx512_bf16") if f in flags] + (
        ["amx"] if any(f.startswith("amx") for f in flags) else [])
    return (f"{fields.get('Model name', 'unknown').strip()}, {fields.get('CPU(s)', '?').strip()} CPU(s), flags: "
            f"{' '.join(found) or 'none of avx2 avx512f avx512_bf16 amx'}")
