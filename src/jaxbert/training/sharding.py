"""Where arrays live: a one-axis device mesh ("data") and the shardings of batches, parameters and optimizer state.

    mesh.mode=data   parameters and optimizer state replicated on every device, each batch split across them
                     (data parallel: XLA inserts the gradient all-reduce)
    mesh.mode=fsdp   the batch split as above, and every parameter and optimizer-state tensor too, along its
                     largest axis that the device count divides (fully sharded: XLA gathers a layer's weights
                     where they are used and reduce-scatters their gradients)

The same code runs on one CPU, on N CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=N`), on
GPUs and TPUs, and over several processes (`jax.distributed.initialize`), where each process builds only its
share of a batch and `jax.make_array_from_process_local_data` assembles the global array. No collective is
written by hand: jit's sharding propagation (GSPMD) places them.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxbert.config import MeshConfig
from jaxbert.errors import JaxbertError

AXIS = "data"


def make_mesh(cfg: MeshConfig) -> Mesh:
    """A mesh over the first `cfg.devices` devices (all of them for 0), every process's included."""
    devices = jax.devices()
    n = cfg.devices or len(devices)
    if n > len(devices):
        raise JaxbertError(f"mesh.devices={n} but only {len(devices)} devices are visible ({devices[0].platform}); "
                           f"lower mesh.devices or use 0 for all")
    return Mesh(np.array(devices[:n]), (AXIS,))


def check_batch(mesh: Mesh, batch_size: int, grad_accum_steps: int = 1) -> None:
    micro = batch_size // grad_accum_steps
    if micro % mesh.size:
        raise JaxbertError(f"a batch of {micro} pairs (train.batch_size / train.grad_accum_steps) cannot be split "
                           f"evenly over {mesh.size} devices; make it a multiple of {mesh.size}")


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], n: int) -> P:
    """Split the largest axis that `n` divides; small or indivisible tensors stay replicated."""
    if n == 1 or not shape:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % n == 0:
            return P(*[AXIS if a == axis else None for a in range(len(shape))])
    return P()


def state_shardings(mesh: Mesh, mode: str, tree):
    """A NamedSharding for every array leaf of `tree` (parameters, optimizer state, or a state holding both)."""
    if mode == "data":
        return jax.tree.map(lambda _: replicated(mesh), tree)
    return jax.tree.map(lambda x: NamedSharding(mesh, _fsdp_spec(np.shape(x), mesh.size)), tree)


def put_batch(mesh: Mesh, local: dict) -> dict:
    """This process's rows of a global batch, as global arrays split over the mesh's data axis: one `device_put`
    of the whole batch in a single process, one array at a time from this process's rows in several."""
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put({k: np.asarray(v) for k, v in local.items()}, sharding)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def local_share(batch: dict) -> dict:
    """This process's rows of a batch every process holds whole (held-out batches)."""
    i, n = jax.process_index(), jax.process_count()
    return {k: v[len(v) // n * i:len(v) // n * (i + 1)] for k, v in batch.items()}


def to_host(tree):
    """NumPy copies of replicated arrays (metrics): this process's copy, so it works with one process or many
    (where `jax.device_get` refuses arrays that span other processes' devices)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x, tree)


def initialize(coordinator: str, num_processes: int | None = None, process_id: int | None = None,
               local_device_ids: list[int] | None = None) -> None:
    """Join a group of `num_processes` processes (one per host, or several on one) before anything runs on a
    device; on CPUs the collectives go through gloo. `coordinator="auto"` lets `jax.distributed` read the group
    from the cluster's environment (SLURM, TPU pods, Open MPI, ...); `local_device_ids` limits this process to
    those of its host's devices (one process per GPU)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator == "auto":
        if num_processes is not None or process_id is not None:
            raise JaxbertError("--coordinator auto reads the process count and id from the cluster; drop "
                               "--num-processes and --process-id")
        try:
            jax.distributed.initialize(local_device_ids=local_device_ids)
        except ValueError as e:  # no cluster environment detected
            raise JaxbertError(f"--coordinator auto found no cluster to join ({e}); outside SLURM, a TPU pod or "
                               "Open MPI give --coordinator HOST:PORT --num-processes N --process-id I") from None
        return
    num_processes = 1 if num_processes is None else num_processes
    process_id = 0 if process_id is None else process_id
    if not 0 <= process_id < num_processes:
        raise JaxbertError(f"--process-id {process_id} must lie in [0, --num-processes {num_processes})")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids)
