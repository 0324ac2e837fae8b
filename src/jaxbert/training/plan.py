"""`jaxbert plan`: what a preset costs before anything is trained, per device, in each sharding mode.

    jaxbert plan --preset bert-large --devices 8 --batch 256

Parameter and optimizer-state sizes come from `jax.eval_shape` of the model and optimizer (nothing is
allocated); each tensor's share per device is what `sharding.py` gives it (whole in data-parallel mode; its
split axis divided by the device count under FSDP). FLOPs per step come from XLA's cost analysis of the lowered
train step at one device's share of the batch (times the device count), and activation memory from the compiled
step's memory analysis at that share (the temporaries XLA allocates: activations kept for the backward pass
and the rest); `--no-compile` skips the compile, which takes a while for the large presets on a CPU.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxbert.config import MESH_MODES, Config
from jaxbert.errors import JaxbertError
from jaxbert.model.bert import BertForPreTraining
from jaxbert.training import optim, sharding


def _bytes(tree, devices: int, mode: str) -> int:
    """Bytes one device holds of `tree` (abstract arrays) when split as `sharding.py` splits it."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape, size = tuple(leaf.shape), int(np.prod(leaf.shape, dtype=np.int64)) * leaf.dtype.itemsize
        split = mode == "fsdp" and sharding._fsdp_spec(shape, devices) != sharding.P()
        total += size // devices if split else size
    return total


def _abstract_batch(cfg: Config, rows: int) -> dict:
    t, p = cfg.data.max_len, cfg.data.num_predictions
    i32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)
    return {"input_ids": i32(rows, t), "segment_ids": i32(rows, t), "valid_lens": i32(rows),
            "masked_positions": i32(rows, p), "masked_ids": i32(rows, p),
            "masked_weights": jax.ShapeDtypeStruct((rows, p), jnp.float32), "nsp_labels": i32(rows)}


def plan(cfg: Config, devices: int, batch: int, *, compile_step: bool = True) -> dict:
    """Sizes (bytes per device for each mode), parameter count and FLOPs per step of `cfg` at `batch` pairs
    over `devices` devices."""
    if devices < 1 or batch < 1:
        raise JaxbertError(f"--devices {devices} and --batch {batch} must be positive")
    if batch % devices:
        raise JaxbertError(f"--batch {batch} cannot be split evenly over {devices} devices; use a multiple of "
                           f"{devices}")
    if cfg.model.vocab_size == 0:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=30522))
    graphdef, params, opt_state, tx = _abstract_state(cfg)
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    out = {"preset": cfg.preset, "parameters": count, "devices": devices, "batch": batch,
           "max_len": cfg.data.max_len, "vocab_size": cfg.model.vocab_size,
           "modes": {mode: {"parameters": _bytes(params, devices, mode), "gradients": _bytes(params, devices, mode),
                            "optimizer state": _bytes(opt_state, devices, mode)} for mode in MESH_MODES}}
    lowered = _lower(cfg, tx, graphdef, params, opt_state, batch // devices)
    if cfg.model.scan_layers or cfg.train.mlm_chunk:
        # XLA's cost analysis counts a loop's body once: count the model's FLOPs on the step without loops (the
        # unrolled layers, the plain MLM output layer; the fused layer's recomputed logits are not counted).
        unrolled = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, scan_layers=False, remat=False),
                                       train=dataclasses.replace(cfg.train, mlm_chunk=0))
        cost = lowered_step(unrolled, batch // devices).cost_analysis()
    else:
        cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    out["flops_per_step"] = float(cost["flops"]) * devices if cost and "flops" in cost else None
    # 6 FLOPs per parameter per token for the encoder's matmuls (forward and backward), the MLM decoder only on
    # the P predicted positions: the usual estimate, beside XLA's count.
    t, p, d, v = cfg.data.max_len, cfg.data.num_predictions, cfg.model.hidden_size, cfg.model.vocab_size
    encoder = count - v * d - cfg.model.max_position_embeddings * d - v
    out["flops_estimate"] = 6.0 * batch * (encoder * t + (v * d) * p)
    out["device"] = device_capacity()
    if compile_step:
        memory = lowered.compile().memory_analysis()
        temp = getattr(memory, "temp_size_in_bytes", None) if memory is not None else None
        for mode in MESH_MODES:
            out["modes"][mode]["activations"] = temp
    return out


def device_capacity() -> dict:
    """This machine's first device: its kind, platform and memory in bytes (what the accelerator's allocator may
    use; on a CPU, the host's physical memory), or None where the backend does not say."""
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    capacity = (stats or {}).get("bytes_limit")
    if capacity is None and device.platform == "cpu":
        try:
            capacity = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            capacity = None
    return {"kind": device.device_kind, "platform": device.platform, "capacity": capacity}


def _abstract_state(cfg: Config):
    """The model's graph, its parameters and optimizer state as shapes (nothing allocated), and the optimizer."""
    tx = optim.optimizer(cfg.optim, cfg.train.steps)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: BertForPreTraining(cfg.model, rngs=nnx.Rngs(0))), nnx.Param)
    return graphdef, params, jax.eval_shape(tx.init, params), tx


def lowered_step(cfg: Config, rows: int):
    """`cfg`'s train step lowered on abstract state and a batch of `rows` pairs: `.compile()` it to time
    compilation or read XLA's memory analysis, `.cost_analysis()` for FLOPs."""
    graphdef, params, opt_state, tx = _abstract_state(cfg)
    return _lower(cfg, tx, graphdef, params, opt_state, rows)


def _lower(cfg: Config, tx, graphdef, params, opt_state, rows: int):
    """The train step, lowered as the loop runs it, at `rows` pairs per device."""
    from jaxbert.training import train

    state = train.TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params, opt_state=opt_state)
    train_step, _ = train.make_steps(graphdef, tx, jax.random.key(0), with_nsp=cfg.data.objective != "mlm",
                                     grad_accum_steps=cfg.train.grad_accum_steps, mlm_chunk=cfg.train.mlm_chunk)
    return train_step.lower(state, _abstract_batch(cfg, rows))


def _size(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def lines(report: dict) -> list[str]:
    modes = report["modes"]
    rows = ["parameters", "gradients", "optimizer state"] + (["activations"] if "activations" in modes["data"] else [])
    out = [f"{report['preset']}: {report['parameters']:,} parameters (vocabulary {report['vocab_size']:,}), "
           f"batch {report['batch']} of {report['max_len']} tokens over {report['devices']} device(s), "
           f"{report['batch'] // report['devices']} per device",
           f"FLOPs per step: {report['flops_per_step']:.3g} (XLA cost analysis of the train step; "
           f"6 x parameters x tokens estimates {report['flops_estimate']:.3g})"
           if report["flops_per_step"] else "FLOPs per step: not reported by this backend",
           f"{'memory per device':<22}{'data parallel':>16}{'fsdp':>16}"]
    for name in rows:
        out.append(f"  {name:<20}{_size(modes['data'][name]):>16}{_size(modes['fsdp'][name]):>16}")
    totals = {m: sum(modes[m][r] or 0 for r in rows) for m in MESH_MODES}
    out.append(f"  {'total':<20}{_size(totals['data']):>16}{_size(totals['fsdp']):>16}")
    device = report.get("device")
    if device and device["capacity"]:
        fits = ", ".join(f"{m} {'fits' if totals[m] <= device['capacity'] else 'does not fit'}" for m in MESH_MODES)
        out.append(f"  this machine's {device['platform'].upper()} device ({device['kind']}) holds "
                   f"{_size(device['capacity'])}: {fits}")
    if "activations" in modes["data"]:
        out.append("  (activations: the compiled step's temporaries at one device's share of the batch; under fsdp "
                   "each device also gathers one layer's weights at a time)")
    return out
