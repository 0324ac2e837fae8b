"""Orbax save and restore of the train state; the data position is the step (batches are f(seed, step)).

Parameters and optimizer state are separate items, so `encode` and exports restore the parameters alone.
"""

from pathlib import Path

import jax
import orbax.checkpoint as ocp

from jaxbert import storage


def manager(run_dir: Path, keep: int = 2) -> ocp.CheckpointManager:
    """Orbax's manager of RUN_DIR/checkpoints: saves run in the background and the newest `keep` are kept."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(storage.path(run_dir) / "checkpoints", options=options)


def save(mngr: ocp.CheckpointManager, step: int, params, opt_state) -> None:
    """Start writing step `step`; orbax copies to host first, so the caller may donate the buffers after."""
    mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                            opt_state=ocp.args.StandardSave(opt_state)))


def restore(mngr: ocp.CheckpointManager, step: int, abstract_params, abstract_opt_state=None):
    """(params, opt_state) of `step`, shaped like the abstract trees; opt_state is None if not asked for."""
    items = {"params": ocp.args.StandardRestore(_placed(abstract_params))}
    if abstract_opt_state is not None:
        items["opt_state"] = ocp.args.StandardRestore(_placed(abstract_opt_state))
    restored = mngr.restore(step, args=ocp.args.Composite(**items))
    return restored["params"], restored.get("opt_state") if abstract_opt_state is not None else None


def _placed(tree):
    """Abstract leaves without a sharding are restored onto this process's first device: a run saved from
    several devices (sharding.py) loads in a process that has one."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device)
                        if isinstance(x, jax.ShapeDtypeStruct) and x.sharding is None else x, tree)
