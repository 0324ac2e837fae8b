"""Pretraining: the train state, one pure jitted train step, an eval step, and `run`, a plain loop.

    jaxbert pretrain --preset d2l-tiny --data ../shared/data/wikitext-2 --out runs/d2l-tiny
"""

import dataclasses
import time
from pathlib import Path

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils

from jaxbert import rundir, storage
from jaxbert.config import Config
from jaxbert.data import batches, tokenization
from jaxbert.errors import JaxbertError
from jaxbert.model import fused_mlm, losses
from jaxbert.model.bert import BertForPreTraining
from jaxbert.training import checkpoint, optim, report, sharding
from jaxbert.training.feed import Prefetcher


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # scalar int32: the number of updates applied, and the data position
    params: nnx.State
    opt_state: optax.OptState


def forward(graphdef, params, batch, *, deterministic: bool, with_nsp: bool, rngs: nnx.Rngs | None = None,
            mlm_capacity: int | None = None, mlm_chunk: int = 0):
    """MLM and NSP metrics of one batch; the model is rebuilt from (graphdef, params) inside the trace.

    With `mlm_capacity` K, the MLM head runs on the batch's real predictions only (weight 1), gathered into K
    rows, whenever there are at most K of them, and on every slot otherwise: the same loss either way, less
    work for the V-wide output layer when many slots are padding (about 30% of W1's). With `mlm_chunk` C > 0 the
    output layer and its loss run fused, C vocabulary pieces at a time (model/fused_mlm.py): the same metrics,
    without the whole logits."""
    model = nnx.merge(graphdef, params)
    if mlm_capacity is None and not mlm_chunk:
        _, mlm_logits, nsp_logits = model(batch["input_ids"], batch["segment_ids"], batch["valid_lens"],
                                          batch["masked_positions"], deterministic=deterministic, rngs=rngs)
        return losses.pretraining_metrics(mlm_logits, nsp_logits, batch, with_nsp=with_nsp)
    x = model.encode(batch["input_ids"], batch["segment_ids"], batch["valid_lens"], deterministic=deterministic,
                     rngs=rngs)
    gathered = jnp.take_along_axis(x, batch["masked_positions"][..., None], axis=1)  # (B, P, D)
    embedding = model.embeddings.word_embeddings.embedding[...]
    weights, labels = jnp.asarray(batch["masked_weights"]), jnp.asarray(batch["masked_ids"])

    def head(h, labels, weights):  # h (b, p, D)
        if not mlm_chunk:
            return losses.mlm_metrics(model.mlm(h, embedding), labels, weights)
        hidden = model.mlm.hidden(h)
        return fused_mlm.mlm_metrics(hidden, model.mlm.kernel(embedding, hidden.dtype), model.mlm.bias[...],
                                     labels.reshape(-1), weights.reshape(-1), chunk=mlm_chunk)

    if mlm_capacity is None:
        m = head(gathered, labels, weights)
    else:
        real = (weights > 0).sum()

        def packed():
            rows = jnp.nonzero(weights.reshape(-1) > 0, size=mlm_capacity, fill_value=0)[0]  # (K,) real first
            kept = (jnp.arange(mlm_capacity) < real).astype(weights.dtype)  # the fill rows weigh nothing
            flat = lambda a: a.reshape(-1, *a.shape[2:])[rows][None]
            return head(flat(gathered), flat(labels), flat(weights) * kept)

        m = jax.lax.cond(real <= mlm_capacity, packed, lambda: head(gathered, labels, weights))
    pooled = jnp.tanh(model.pooler(x[:, 0]))
    if with_nsp:
        m |= losses.nsp_metrics(model.nsp(pooled), batch["nsp_labels"])
    m["loss"] = m["mlm_loss"] + m["nsp_loss"] if with_nsp else m["mlm_loss"]
    return m


def pack_capacity(train_set, batch_size: int, *, probe: int = 16) -> int | None:
    """K for `forward`: the most real predictions in the first `probe` batches, plus 2%, in multiples of 8;
    None (no packing) when that leaves less than a tenth of the slots out. A batch above K runs unpacked."""
    return capacity_for([train_set.batch(step, batch_size) for step in range(probe)])


def capacity_for(batches: list[dict]) -> int | None:
    """`pack_capacity` from given batches."""
    most = max(int((b["masked_weights"] > 0).sum()) for b in batches)
    slots = batches[0]["masked_weights"].size
    k = -(-int(most * 1.02) // 8) * 8
    return k if k <= 0.9 * slots else None


def make_steps(graphdef, tx: optax.GradientTransformation, dropout_key: jax.Array, *, with_nsp: bool = True,
               grad_accum_steps: int = 1, mesh=None, state_shardings=None, mlm_capacity: int | None = None,
               mlm_chunk: int = 0):
    """(train_step, eval_step), each jitted once; train_step donates the state it is given and returns it with
    `state_shardings` (sharding.py; None: wherever the compiler puts it), and its metrics replicated on `mesh`.

    With `grad_accum_steps` k > 1 the batch is cut into k micro-batches run one after another (`lax.scan`), and
    their gradients and metrics are summed with the weights that make them those of the whole batch: a
    micro-batch's MLM terms by its share of the batch's real predictions, its NSP terms by 1/k.
    `mlm_capacity` (see `forward`) packs the real predictions of each (micro-)batch; `mlm_chunk` fuses the MLM
    output layer with its loss.
    """
    k = grad_accum_steps

    def grads_and_metrics(params, batch, key, mlm_share, nsp_share):
        def loss_fn(params):
            rngs = nnx.Rngs(dropout=key)  # made inside the differentiated trace, which advances it
            m = forward(graphdef, params, batch, deterministic=False, with_nsp=with_nsp, rngs=rngs,
                        mlm_capacity=None if mlm_capacity is None else -(-mlm_capacity // k), mlm_chunk=mlm_chunk)
            m = {name: v * (nsp_share if name.startswith("nsp") else mlm_share) for name, v in m.items()
                 if name != "loss"}
            return m["mlm_loss"] + (m["nsp_loss"] if with_nsp else 0.0), m

        grads, metrics = jax.grad(loss_fn, has_aux=True)(params)
        return grads, metrics

    def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(dropout_key, state.step)  # a fresh dropout key per step
        if k == 1:
            grads, metrics = grads_and_metrics(state.params, batch, key, 1.0, 1.0)
        else:
            micro = jax.tree.map(lambda x: x.reshape(k, x.shape[0] // k, *x.shape[1:]), batch)
            real = batch["masked_weights"].sum()

            def accumulate(acc, i):
                mb = jax.tree.map(lambda x: x[i], micro)
                share = jnp.where(real > 0, mb["masked_weights"].sum() / jnp.maximum(real, 1.0), 1.0 / k)
                g, m = grads_and_metrics(state.params, mb, jax.random.fold_in(key, i), share, 1.0 / k)
                return jax.tree.map(jnp.add, acc, (g, m)), None

            zeros = jax.eval_shape(grads_and_metrics, state.params, jax.tree.map(lambda x: x[0], micro), key,
                                   1.0, 1.0)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
            (grads, metrics), _ = jax.lax.scan(accumulate, zeros, jnp.arange(k))
        metrics["loss"] = metrics["mlm_loss"] + metrics["nsp_loss"] if with_nsp else metrics["mlm_loss"]
        metrics["grad_norm"] = optax.tree.norm(grads)  # before clipping
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    def eval_step(params, batch) -> dict:
        return forward(graphdef, params, batch, deterministic=True, with_nsp=with_nsp, mlm_chunk=mlm_chunk)

    if state_shardings is None:
        return jax.jit(train_step, donate_argnums=0), jax.jit(eval_step)
    out = sharding.replicated(mesh)
    return (jax.jit(train_step, donate_argnums=0, out_shardings=(state_shardings, out)),
            jax.jit(eval_step, out_shardings=out))


def init_state(cfg: Config, tx: optax.GradientTransformation):
    """(graphdef, state) with freshly initialised parameters."""
    model = BertForPreTraining(cfg.model, rngs=nnx.Rngs(params=cfg.train.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def run(cfg: Config, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
        overwrite: bool = False) -> list[str]:
    """Train `cfg` into `run_dir` (or continue the run there); returns the summary lines."""
    started = time.perf_counter()  # a budget counts from here: loading data and compiling are part of it
    run_dir = storage.path(run_dir)
    source = batches.locate(data_dir)  # before touching run_dir: a bad --data changes nothing
    sharding.check_batch(sharding.make_mesh(cfg.mesh), cfg.train.batch_size, cfg.train.grad_accum_steps)
    fingerprint = batches.fingerprint(source)
    # With several processes, process 0 claims the directory and writes the run's files; every process reads
    # the data and trains (orbax coordinates the checkpoints), and they share one run directory.
    primary = jax.process_index() == 0
    resuming = rundir.claim(run_dir, resume=resume, overwrite=overwrite) if primary else resume
    try:
        return _train(cfg, run_dir, source, fingerprint, resuming=resuming, primary=primary, started=started)
    finally:
        rundir.release(run_dir)  # a no-op where this process holds no lock


def _train(cfg: Config, run_dir: Path, source, fingerprint: str, *, resuming: bool, primary: bool,
           started: float) -> list[str]:
    """`run` once the run directory is claimed."""
    say = report.stage if primary else (lambda text: None)
    say(f"loading {batches.describe(source)}")
    if resuming:
        cfg = resumed_config(cfg, run_dir, rundir.latest_step(run_dir))
        tok = tokenization.load(run_dir / rundir.TOKENIZER)
        _, train_set, eval_set = batches.load(source, cfg.data, tok)  # names a tokenizer mismatch first
        recorded = rundir.recorded_data(run_dir)
        if recorded and recorded["fingerprint"] != fingerprint:
            raise JaxbertError(f"--resume: {batches.describe(source)} is not the data this run was trained on "
                               f"({recorded['source']}, fingerprint in {run_dir / rundir.DATA}); pass that --data")
        batches.batch_indices(len(train_set), cfg.train.batch_size, cfg.data.seed, 0)  # fails early if too small
        if primary:
            cfg.save(run_dir / rundir.CONFIG)  # the run's config now says how far it goes
            rundir.record_data(run_dir, batches.describe(source), fingerprint)
    else:
        try:  # every check before the first file is written: a refused run leaves no directory behind
            tok, train_set, eval_set = batches.load(source, cfg.data)
            batches.batch_indices(len(train_set), cfg.train.batch_size, cfg.data.seed, 0)
            if cfg.model.vocab_size not in (0, tok.get_vocab_size()):
                raise JaxbertError(f"model.vocab_size={cfg.model.vocab_size} does not match the data's tokenizer "
                                   f"({tok.get_vocab_size()} tokens); leave model.vocab_size at 0 or prepare "
                                   "the data with a matching tokenizer")
        except BaseException:
            if primary and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
            raise
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tok.get_vocab_size()))
        if primary:
            cfg.save(run_dir / rundir.CONFIG)  # first: a run killed from here on is one --overwrite can restart
            tokenization.save(tok, run_dir / rundir.TOKENIZER)
            rundir.record_data(run_dir, batches.describe(source), fingerprint)

    batch_size = cfg.train.batch_size
    say(f"{len(train_set):,} training examples, a vocabulary of {cfg.model.vocab_size:,}; building the model")
    mesh, eval_batches, next_batch, graphdef, state, state_shardings = setup(cfg, train_set, eval_set)
    if cfg.train.budget_s and not resuming:  # a resumed run keeps the steps fitted when it started
        say(f"fitting train.steps to the budget: compiling, then timing {PROBE_STEPS} steps and an evaluation")
        try:
            timing = time_steps(cfg, graphdef, state, next_batch, eval_batches, mesh=mesh,
                                state_shardings=state_shardings)
            steps = fit_steps(cfg, timing, started + cfg.train.budget_s)
        except JaxbertError:
            if primary:
                storage.remove(run_dir)  # nothing was trained: leave no half-made run behind
            raise
        if jax.process_count() > 1:  # every process trains process 0's fit
            steps = int(multihost_utils.broadcast_one_to_all(np.int32(steps)))
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))
        say(f"{steps:,} steps fit the budget ({timing.step_s:.3f} s each)")
        if primary:
            cfg.save(run_dir / rundir.CONFIG)
    tx = optim.optimizer(cfg.optim, cfg.train.steps)
    learning_rate = optim.schedule(cfg.optim, cfg.train.steps)
    mngr = checkpoint.manager(run_dir, keep=cfg.train.keep_checkpoints)
    if resuming:
        step = rundir.latest_step(run_dir)
        params, opt_state = checkpoint.restore(mngr, step, state.params, state.opt_state)
        state = TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=opt_state)
    start = int(state.step)

    train_step, eval_step = compiled_steps(cfg, graphdef, tx, mesh, state_shardings)
    say(f"compiling the train step (the first step pays it), then steps {start + 1} to {cfg.train.steps}")
    pair_task = {"nsp": "NSP", "d2l": "NSP", "sop": "SOP"}.get(cfg.data.objective)  # None: MLM only
    rep = report.Reporter(run_dir / rundir.METRICS, run_dir / rundir.PLOT, total_steps=cfg.train.steps,
                          start_step=start, pair_task=pair_task, tensorboard_dir=run_dir / rundir.TENSORBOARD,
                          primary=primary)
    if eval_batches and start == 0:
        rep.eval(0, evaluate(eval_step, state.params, eval_batches))  # the baseline the curves fall from
    sums, interval_start, t0, first = None, start, time.perf_counter(), True
    unchecked = []  # (step, loss + gradient norm) on device, for every step since the last finiteness check
    # The feed builds each batch and sends it to the devices on its own thread, ahead of the step that takes it.
    feed = Prefetcher(next_batch, start, cfg.train.prefetch) if cfg.train.prefetch else None
    try:
        for step in range(start + 1, cfg.train.steps + 1):
            state, metrics = train_step(state, next_batch(step - 1) if feed is None else feed.get(step - 1))
            sums, check = accumulate(sums, metrics)  # stays on device
            unchecked.append((step, check))
            rep.bar.update()
            logs = step % cfg.train.log_every == 0 or step == cfg.train.steps
            saves = step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps
            if logs or saves:  # nothing non-finite is logged or checkpointed
                check_finite(unchecked, mngr, rep, run_dir, cfg)
                unchecked = []
            if logs:
                n = step - interval_start
                means = {k: float(v) / n for k, v in sharding.to_host(sums).items()}  # host-device sync
                means["learning_rate"] = float(learning_rate(step - 1))  # this step's update's (optax counts from 0)
                rep.train(step, means, n * batch_size / (time.perf_counter() - t0), first_interval=first)
                sums, interval_start, first = None, step, False
            if eval_batches and (step % cfg.train.eval_every == 0 or step == cfg.train.steps):
                rep.eval(step, evaluate(eval_step, state.params, eval_batches))  # host-device sync
            if saves:
                checkpoint.save(mngr, step, state.params, state.opt_state)
            if sums is None:
                t0 = time.perf_counter()  # time only training steps, not logging, evaluation or checkpoints
    finally:
        if feed is not None:
            feed.close()
    mngr.wait_until_finished()
    rep.plot()
    lines = rep.summary(jax.devices())
    if cfg.train.budget_s and not resuming:
        lines.append(f"{cfg.train.steps} steps fitted to a budget of {cfg.train.budget_s:.0f} s; "
                     f"the run took {time.perf_counter() - started:.0f} s")
    return lines


@jax.jit
def accumulate(sums: dict | None, metrics: dict) -> tuple[dict, jax.Array]:
    """The log interval's metric sums with this step's added (None: the interval's first step), and the value
    whose finiteness `check_finite` checks: one dispatch a step instead of one per metric."""
    sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
    return sums, metrics["loss"] + metrics["grad_norm"]


def check_finite(unchecked: list, mngr, rep, run_dir: Path, cfg: Config) -> None:
    """Stop the run with the first step whose loss or gradient norm is not finite (NaN or inf), after the
    checkpoints already started are written: they hold only steps before it."""
    steps, values = zip(*unchecked)
    values = np.asarray(sharding.to_host(list(values)))  # host-device sync
    bad = np.flatnonzero(~np.isfinite(values))
    if not len(bad):
        return
    mngr.wait_until_finished()
    rep.bar.close()
    rep.close()
    last = rundir.latest_step(run_dir)
    kept = f"the last good checkpoint is step {last}" if last is not None else "no checkpoint was written before it"
    raise JaxbertError(f"the loss or gradient became non-finite at step {steps[bad[0]]}; training stopped and "
                       f"{kept} in {run_dir}. Start a new run with a lower optim.learning_rate (now "
                       f"{cfg.optim.learning_rate:g}) or with optim.clip_norm set")


PROBE_STEPS = 5  # timed train steps (after the one that compiles) when fitting a budget or in a dry run


@dataclasses.dataclass(frozen=True)
class Timing:
    step_s: float  # one train step, the median of PROBE_STEPS after the one that compiles
    compile_s: float  # compiling the train step and the evaluation, paid once by a run
    eval_s: float  # one evaluation (0 without held-out data)

    def per_step(self, eval_every: int) -> float:
        """A step's share of the run: the step and an evaluation every `eval_every` steps."""
        return self.step_s + self.eval_s / eval_every


def time_steps(cfg: Config, graphdef, state: TrainState, next_batch, eval_batches, *, mesh,
               state_shardings) -> Timing:
    """Time throwaway steps from a copy of `state`: what the real loop pays to compile its step (the schedule is
    part of the program, so a run compiles again), each step, and each evaluation."""
    train_step, eval_step = compiled_steps(cfg, graphdef, optim.optimizer(cfg.optim, cfg.train.steps), mesh,
                                           state_shardings)
    probe, times = jax.device_put(jax.tree.map(jnp.copy, state), state_shardings), []
    for i in range(PROBE_STEPS + 1):
        t = time.perf_counter()
        probe, metrics = train_step(probe, next_batch(i))
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    step_s = float(np.median(times[1:]))
    compile_s, eval_s = times[0] - step_s, 0.0
    if eval_batches:
        t = time.perf_counter()
        evaluate(eval_step, probe.params, eval_batches)  # compiles: the real loop pays this at step 0
        compile_s += time.perf_counter() - t
        t = time.perf_counter()
        evaluate(eval_step, probe.params, eval_batches)
        eval_s = time.perf_counter() - t
    return Timing(step_s, compile_s, eval_s)


def fit_steps(cfg: Config, timing: Timing, deadline: float) -> int:
    """How many steps of `timing` fit before `deadline` (a `time.perf_counter` value), counting the compiling and
    an evaluation every `train.eval_every` steps. The result is fixed for the rest of the run, so it is as
    reproducible as a step count."""
    steps = int((deadline - time.perf_counter() - timing.compile_s) / timing.per_step(cfg.train.eval_every))
    if steps < 1:
        raise JaxbertError(f"a budget of {cfg.train.budget_s:.0f} s leaves no time to train (one step takes "
                           f"{timing.step_s:.2f} s after {timing.compile_s:.0f} s of compiling); give a larger "
                           "--budget")
    return steps


def setup(cfg: Config, train_set, eval_set):
    """(mesh, the held-out batches on devices, step -> that step's batch on devices (built from this process's
    share), graphdef, the initial train state on devices, its shardings)."""
    batch_size = cfg.train.batch_size
    mesh = sharding.make_mesh(cfg.mesh)
    sharding.check_batch(mesh, batch_size, cfg.train.grad_accum_steps)
    eval_batches = [sharding.put_batch(mesh, sharding.local_share(b))
                    for b in (eval_set.eval_batches(cfg.train.eval_batches, batch_size) if eval_set else [])]
    next_batch = lambda step: sharding.put_batch(
        mesh, train_set.batch(step, batch_size, jax.process_index(), jax.process_count()))
    graphdef, state = init_state(cfg, optim.optimizer(cfg.optim, cfg.train.steps))
    state_shardings = sharding.state_shardings(mesh, cfg.mesh.mode, state)
    return mesh, eval_batches, next_batch, graphdef, jax.device_put(state, state_shardings), state_shardings


def compiled_steps(cfg: Config, graphdef, tx, mesh, state_shardings):
    """(train_step, eval_step) of `cfg` (MLM head unpacked: docs/performance.md)."""
    return make_steps(graphdef, tx, jax.random.key(cfg.train.seed, impl=cfg.train.prng_impl),
                      with_nsp=cfg.data.objective != "mlm", grad_accum_steps=cfg.train.grad_accum_steps, mesh=mesh,
                      state_shardings=state_shardings, mlm_chunk=cfg.train.mlm_chunk)


def evaluate(eval_step, params, batches) -> dict:
    """Mean metrics over equally sized held-out batches (dropout off)."""
    results = sharding.to_host([eval_step(params, b) for b in batches])
    return {k: sum(float(r[k]) for r in results) / len(results) for k in results[0]}


# What may change when a run is resumed: how far it goes and how often it reports. Everything else shapes the
# steps already taken (model, data, optimizer and schedule, batch size, seeds), so it stays as the run was made.
RESUMABLE = ("train.steps", "train.log_every", "train.eval_every", "train.eval_batches", "train.checkpoint_every",
             "train.keep_checkpoints", "train.prefetch")


def resumed_config(asked: Config, run_dir: Path, step: int) -> Config:
    """The run's saved config with the changes `asked` may make at `step`, or a clear error naming the field.

    At step 0 (an imported checkpoint, nothing trained yet) only the model is fixed. Later, only `RESUMABLE`
    fields may change, and `train.steps` only if the learning rate of every step already taken stays the same:
    a constant schedule, or a decay that has not begun (the run is still warming up).
    """
    path = run_dir / rundir.CONFIG
    saved = Config.load(path)
    if asked.preset != saved.preset:
        raise JaxbertError(f"--resume: the run in {run_dir} was made with --preset {saved.preset}, not "
                           f"{asked.preset}; drop --preset to continue it")
    asked = dataclasses.replace(asked, model=dataclasses.replace(
        asked.model, vocab_size=asked.model.vocab_size or saved.model.vocab_size))
    fixed = [(f"{section}.{f.name}", getattr(getattr(asked, section), f.name), getattr(getattr(saved, section), f.name))
             for section in ("model", "data", "optim", "train") for f in dataclasses.fields(getattr(saved, section))]
    fixed = [(name, new, old) for name, new, old in fixed if new != old and name not in RESUMABLE
             and (step > 0 or name.startswith("model."))]
    if fixed:
        changes = ", ".join(f"{name}={new} (the run has {old})" for name, new, old in fixed)
        raise JaxbertError(f"--resume: {changes} would change the {step} steps already taken, so it stays as in "
                           f"{path}; only {', '.join(RESUMABLE)} may change, or start a new run")
    if step >= asked.train.steps:
        raise JaxbertError(f"the run in {run_dir} already reached step {step} of train.steps={asked.train.steps}; "
                           f"pass --set train.steps=N with N > {step} to train further")
    if step > 0 and asked.train.steps != saved.train.steps:
        taken = np.arange(step)
        before = optim.schedule(saved.optim, saved.train.steps)(taken)
        after = optim.schedule(asked.optim, asked.train.steps)(taken)
        if not np.array_equal(np.asarray(before), np.asarray(after)):
            raise JaxbertError(
                f"--resume: train.steps={asked.train.steps} would change the learning rate of the {step} steps "
                f"already taken (optim.schedule={saved.optim.schedule} decays to 0 at train.steps="
                f"{saved.train.steps}); keep train.steps={saved.train.steps}, or continue from this run's weights in "
                "a new run (jaxbert export, then jaxbert import)")
    return asked if step == 0 else dataclasses.replace(saved, train=asked.train, mesh=asked.mesh)
