"""Frozen configuration dataclasses, one per concern, plus the named presets and `--set` overrides.

Model fields use the names of Hugging Face `BertConfig`, so `config.json` maps one to one onto it.
Scaling from the book's toy to BERT-Large is a change of preset and nothing else:

    cfg = preset("bert-base")
    cfg = override(cfg, ["train.steps=200", "optim.learning_rate=3e-4"])
"""

import dataclasses
import json
import typing
from pathlib import Path

from jaxbert.errors import JaxbertError
from jaxbert import storage
from jaxbert.storage import write_atomic

ACTIVATIONS = ("relu", "gelu")
SCHEDULES = ("constant", "linear", "cosine", "wsd")
PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
ALGORITHMS = ("adam", "lamb")
DTYPES = ("float32", "bfloat16")
OBJECTIVES = ("nsp", "sop", "mlm", "d2l")


def _positive(obj, *names: str) -> None:
    section = type(obj).__name__.removesuffix("Config").lower()
    for name in names:
        if getattr(obj, name) <= 0:
            raise JaxbertError(f"{section}.{name}={getattr(obj, name)} must be positive")


def _probability(obj, *names: str) -> None:
    section = type(obj).__name__.removesuffix("Config").lower()
    for name in names:
        if not 0.0 <= getattr(obj, name) < 1.0:
            raise JaxbertError(f"{section}.{name}={getattr(obj, name)} must lie in [0, 1)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The encoder and its two pretraining heads (names as in `transformers.BertConfig`)."""

    vocab_size: int = 0  # 0 = take it from the tokenizer when the run is built
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    tie_word_embeddings: bool = True  # MLM decoder shares the token embedding matrix
    # The compute dtype: bfloat16 runs matmuls and activations in bf16 while parameters, gradients and optimizer
    # state stay float32 (softmax and the losses in float32 too). Not exported: transformers reads `dtype` as the
    # storage type of the weights, which stay float32.
    dtype: str = "float32"
    # The encoder's layers as one stacked module applied with nnx.scan (compile time independent of depth; the
    # parameters carry a leading layer axis), and rematerialisation (activations recomputed in the backward pass
    # instead of stored: less memory, about a third more compute). Neither changes the function computed.
    scan_layers: bool = False
    remat: bool = False

    def __post_init__(self):
        _positive(self, "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings", "type_vocab_size")
        if self.vocab_size < 0:
            raise JaxbertError(f"model.vocab_size={self.vocab_size} is negative; use 0 (from the tokenizer) or a size")
        if self.hidden_size % self.num_attention_heads:
            raise JaxbertError(
                f"model.hidden_size={self.hidden_size} is not divisible by model.num_attention_heads="
                f"{self.num_attention_heads}; choose a number of heads that divides the hidden size")
        if self.dtype not in DTYPES:
            raise JaxbertError(f"model.dtype={self.dtype!r} is not supported; use one of {DTYPES}")
        if self.hidden_act not in ACTIVATIONS:
            raise JaxbertError(f"model.hidden_act={self.hidden_act!r} is not supported; use one of {ACTIVATIONS}")
        _probability(self, "hidden_dropout_prob", "attention_probs_dropout_prob")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    """How sentence pairs are cut, tokenized and masked (the book's semantics)."""

    max_len: int = 128  # T: <cls> A <sep> B <sep> plus padding
    mask_prob: float = 0.15  # share of tokens predicted by MLM
    max_predictions: int = 0  # P; 0 = round(mask_prob * max_len), as the book does
    min_freq: int = 5  # word-level vocabulary: keep words seen at least this often
    seed: int = 0  # paragraph shuffle, NSP negatives, masking, epoch order
    # Prepared directories only (`jaxbert prepare`); a WikiText folder keeps the book's semantics.
    objective: str = "nsp"  # nsp (BERT), sop (ALBERT's sentence order), mlm (RoBERTa: one segment), d2l (the book)
    short_seq_prob: float = 0.1  # share of instances packed to a random shorter length
    whole_word_masking: bool = False  # mask all WordPiece pieces of a word together
    dynamic_masking: bool = False  # draw masks afresh each epoch (RoBERTa) instead of once (BERT)

    def __post_init__(self):
        _positive(self, "min_freq")
        if self.objective not in OBJECTIVES:
            raise JaxbertError(f"data.objective={self.objective!r} is not supported; use one of {OBJECTIVES}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise JaxbertError(f"data.short_seq_prob={self.short_seq_prob} must lie in [0, 1]")
        if self.max_len < 5:
            raise JaxbertError(f"data.max_len={self.max_len} cannot hold <cls> A <sep> B <sep>; use at least 5")
        if not 0.0 < self.mask_prob < 1.0:
            raise JaxbertError(f"data.mask_prob={self.mask_prob} must lie strictly between 0 and 1")
        if self.max_predictions < 0:
            raise JaxbertError(f"data.max_predictions={self.max_predictions} is negative; use 0 for automatic")

    @property
    def num_predictions(self) -> int:
        """P, the fixed width of the masked fields."""
        return self.max_predictions or max(1, round(self.mask_prob * self.max_len))


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """Adam(W) or LAMB with linear warmup, then constant, linear or cosine decay to zero, or wsd: constant, then
    linear decay to zero over the last `cooldown` share of the steps after warmup (warmup-stable-decay)."""

    algorithm: str = "adam"  # adam (AdamW when weight_decay > 0) or lamb (You et al. 2019: large batches)
    learning_rate: float = 1e-4
    warmup_steps: int = 0
    schedule: str = "linear"
    cooldown: float = 0.2  # wsd only: the share of the post-warmup steps spent decaying to zero
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    weight_decay: float = 0.01  # 0 = plain Adam; biases and LayerNorm are never decayed
    clip_norm: float = 1.0  # global gradient-norm clip; 0 = off

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise JaxbertError(f"optim.learning_rate={self.learning_rate} must be positive")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.clip_norm < 0:
            raise JaxbertError("optim.warmup_steps, optim.weight_decay and optim.clip_norm must not be negative")
        if not 0.0 < self.cooldown <= 1.0:
            raise JaxbertError(f"optim.cooldown={self.cooldown} must lie in (0, 1]")
        if self.schedule not in SCHEDULES:
            raise JaxbertError(f"optim.schedule={self.schedule!r} is not supported; use one of {SCHEDULES}")
        if self.algorithm not in ALGORITHMS:
            raise JaxbertError(f"optim.algorithm={self.algorithm!r} is not supported; use one of {ALGORITHMS}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The loop: how long, how big a batch, and how often to log, evaluate and checkpoint."""

    steps: int = 1000
    batch_size: int = 256  # B, sentence pairs per step
    seed: int = 0  # parameter init and dropout
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 4  # held-out batches per evaluation (0 = no evaluation)
    checkpoint_every: int = 500  # a checkpoint is also written at the last step
    keep_checkpoints: int = 2  # the newest N are kept (written in the background by orbax)
    # Wall-clock budget in seconds (`--budget 10m`); 0 = off. When set, `steps` is fitted at the start of the run
    # to what the budget holds (timed on throwaway steps), so the learning-rate schedule ends at the budget.
    budget_s: float = 0.0
    # Gradient accumulation: each step runs batch_size / grad_accum_steps pairs at a time inside the jitted step
    # and applies one update for the whole batch (the same update as one batch of batch_size, in less memory).
    grad_accum_steps: int = 1
    # Dropout's random bits: threefry2x32 (JAX's default) draws the same bits however the batch is sharded; rbg
    # and unsafe_rbg are faster on TPUs, and their bits depend on the sharding.
    prng_impl: str = "threefry2x32"
    # Host batches built this many steps ahead on a background thread (0: in the loop); the batches are the same.
    prefetch: int = 2
    # The MLM output layer fused with its loss, this many vocabulary pieces at a time (model/fused_mlm.py), so the
    # (predictions, V) logits never exist whole; 0 = the plain layer. The same metrics and gradients either way.
    mlm_chunk: int = 256

    def __post_init__(self):
        _positive(self, "steps", "batch_size", "log_every", "eval_every", "checkpoint_every", "grad_accum_steps",
                  "keep_checkpoints")
        if self.mlm_chunk < 0:
            raise JaxbertError(f"train.mlm_chunk={self.mlm_chunk} is negative; use 0 for the plain MLM output layer")
        if self.prefetch < 0:
            raise JaxbertError(f"train.prefetch={self.prefetch} is negative; use 0 to build batches in the loop")
        if self.prng_impl not in PRNG_IMPLS:
            raise JaxbertError(f"train.prng_impl={self.prng_impl!r} is not one of {', '.join(PRNG_IMPLS)}")
        if self.batch_size % self.grad_accum_steps:
            raise JaxbertError(f"train.batch_size={self.batch_size} is not divisible by train.grad_accum_steps="
                               f"{self.grad_accum_steps}; choose a divisor of the batch size")
        if self.eval_batches < 0:
            raise JaxbertError(f"train.eval_batches={self.eval_batches} is negative; use 0 to skip evaluation")
        if self.budget_s < 0:
            raise JaxbertError(f"train.budget_s={self.budget_s} is negative; use 0 for no budget")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """BERT's usual fine-tuning recipe; tiny models need higher rates than BERT-Base's 2e-5 to 5e-5."""

    task: str
    max_len: int = 128  # pairs are truncated longest-first, as transformers does
    batch_size: int = 32
    epochs: int = 3
    learning_rate: float = 1e-4
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0  # head initialisation, dropout and the order of examples
    dropout: float = 0.1  # hidden and attention dropout while fine-tuning, whatever the run pretrained with
    max_train_examples: int = 0  # 0 = all: a cap for quick runs
    labelled: int = 0  # --labels: train on a class-balanced draw of this many labelled examples; 0 = all
    validation: int = 1000  # training examples held out (class-balanced, at most a tenth) to choose the epoch
    data_seed: int = 0  # the draws of --labels and --validation (the same for every --seed and --random-init)
    truncation: str = "head"  # a long single text keeps its head, or head_tail: its first quarter and its end

    def __post_init__(self):
        for name in ("max_len", "batch_size", "epochs"):
            if getattr(self, name) <= 0:
                raise JaxbertError(f"--{name.replace('_', '-')} {getattr(self, name)} must be positive")
        if not self.learning_rate > 0 or not 0 <= self.warmup_fraction < 1:
            raise JaxbertError("the learning rate must be positive and the warmup fraction in [0, 1)")
        if self.labelled < 0 or self.validation <= 0 or self.max_train_examples < 0:
            raise JaxbertError("--labels and --max-train-examples must not be negative, --validation must be positive")
        if self.truncation not in ("head", "head_tail"):
            raise JaxbertError(f"--truncation {self.truncation!r} is not one of head, head_tail")
        if not 0 <= self.dropout < 1:
            raise JaxbertError(f"--dropout {self.dropout} must be in [0, 1)")


MESH_MODES = ("data", "fsdp")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
    """Which devices train and how the state is split over them (sharding.py); not part of what a run computes,
    so a resumed run may change it."""

    mode: str = "data"  # data: parameters replicated, batches split; fsdp: parameters and optimizer state split too
    devices: int = 0  # how many of the visible devices (every process's); 0 = all

    def __post_init__(self):
        if self.mode not in MESH_MODES:
            raise JaxbertError(f"mesh.mode={self.mode!r} is not supported; use one of {MESH_MODES}")
        if self.devices < 0:
            raise JaxbertError(f"mesh.devices={self.devices} is negative; use 0 for every device")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Everything a run needs; written as `config.json` into the run directory."""

    preset: str = "custom"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    mesh: MeshConfig = MeshConfig()

    def __post_init__(self):
        if self.data.max_len > self.model.max_position_embeddings:
            raise JaxbertError(
                f"data.max_len={self.data.max_len} exceeds model.max_position_embeddings="
                f"{self.model.max_position_embeddings}; lower one or raise the other")
        if self.data.num_predictions > self.data.max_len - 3:
            raise JaxbertError(f"data.max_predictions={self.data.num_predictions} exceeds the "
                               f"{self.data.max_len - 3} word positions of data.max_len={self.data.max_len}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        sections = {f.name: f.type for f in dataclasses.fields(cls) if f.name != "preset"}
        unknown = set(d) - set(sections) - {"preset"}
        if unknown:
            raise JaxbertError(f"config has unknown sections {sorted(unknown)}; expected {sorted(sections)}")
        kwargs = {}
        for name, section_cls in sections.items():
            valid = {f.name for f in dataclasses.fields(section_cls)}
            extra = set(d.get(name, {})) - valid
            if extra:
                raise JaxbertError(f"config section {name!r} has unknown fields {sorted(extra)}")
            kwargs[name] = section_cls(**d.get(name, {}))
        return cls(preset=d.get("preset", "custom"), **kwargs)

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Config":
        try:
            return cls.from_dict(json.loads(storage.path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise JaxbertError(f"cannot read config {path}: {e}; is this a jaxbert run directory?") from None


def _model(layers: int, hidden: int, ffn: int, heads: int, **kw) -> ModelConfig:
    return ModelConfig(num_hidden_layers=layers, hidden_size=hidden, intermediate_size=ffn,
                       num_attention_heads=heads, **kw)


# The book's pretraining run (d2l, "Pretraining BERT"): 2 layers, 128 hidden, 256 FFN, 2 heads, dropout 0.2,
# ReLU, an untied MLM decoder, 512 sentence pairs of at most 64 tokens, Adam without weight decay.
_D2L_TINY = Config(
    preset="d2l-tiny",
    model=_model(2, 128, 256, 2, hidden_act="relu", hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2,
                 tie_word_embeddings=False, layer_norm_eps=1e-6),
    data=DataConfig(max_len=64, objective="d2l"),
    optim=OptimConfig(learning_rate=1e-4, warmup_steps=0, schedule="constant", weight_decay=0.0, clip_norm=0.0,
                      eps=1e-8),
    train=TrainConfig(steps=140, batch_size=512, log_every=5, eval_every=20, eval_batches=4, checkpoint_every=70),
)


# The book's model trained the fastest way measured on a CPU (docs/pretraining.md, "Recipes"): full windows of 64
# tokens, MLM only with masks drawn afresh each epoch, batch 128, lr 2e-3 after 50 warmup steps with linear decay,
# gradients clipped at 1, no dropout. Give it --budget: 5 minutes on 2 cores fit about 900 steps.
_D2L_TINY_FAST = dataclasses.replace(
    _D2L_TINY, preset="d2l-tiny-fast",
    model=dataclasses.replace(_D2L_TINY.model, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    data=dataclasses.replace(_D2L_TINY.data, objective="mlm", dynamic_masking=True),
    optim=dataclasses.replace(_D2L_TINY.optim, learning_rate=2e-3, warmup_steps=50, schedule="linear",
                              clip_norm=1.0),
    train=TrainConfig(steps=2000, batch_size=128, log_every=50, eval_every=500, eval_batches=4),
)

# Google's step count: the bert-* presets train this many steps unless given --budget or train.steps.
GOOGLE_STEPS = 1_000_000


def _bert(layers: int, hidden: int, heads: int) -> Config:
    # Google's BERT recipe (phase 1): sequence 128, AdamW 1e-4, weight decay 0.01, 10k warmup steps.
    return Config(preset="custom", model=_model(layers, hidden, 4 * hidden, heads), data=DataConfig(max_len=128),
                  optim=OptimConfig(warmup_steps=10_000), train=TrainConfig(steps=GOOGLE_STEPS, batch_size=256))


# bert-tiny with the recipe measured for a CPU and your own text (docs/transfer.md): MLM only on full windows of 128
# pieces with masks drawn afresh each epoch, batch 128, lr 2e-3 after 50 warmup steps and linear decay, no
# dropout (a short run does not overfit). Give it --budget: 30 minutes on 2 cores fit about 2,300 steps.
_BERT_TINY_CPU = Config(
    preset="bert-tiny-cpu",
    model=_model(2, 128, 512, 2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    data=DataConfig(max_len=128, objective="mlm", dynamic_masking=True),
    optim=OptimConfig(learning_rate=2e-3, warmup_steps=50, schedule="linear"),
    train=TrainConfig(steps=2000, batch_size=128, log_every=50, eval_every=500, eval_batches=4),
)


PRESETS: dict[str, Config] = {
    "d2l-tiny": _D2L_TINY,
    "d2l-tiny-fast": _D2L_TINY_FAST,
    "bert-tiny-cpu": _BERT_TINY_CPU,
    # Google's compact BERTs (Turc et al. 2019): FFN = 4 x hidden, one head per 64 hidden units.
    "bert-tiny": _bert(2, 128, 2),
    "bert-mini": _bert(4, 256, 4),
    "bert-small": _bert(4, 512, 8),
    "bert-medium": _bert(8, 512, 8),
    "bert-base": _bert(12, 768, 12),
    "bert-large": _bert(24, 1024, 16),
}
PRESETS = {name: dataclasses.replace(cfg, preset=name) for name, cfg in PRESETS.items()}


def preset(name: str) -> Config:
    try:
        return PRESETS[name]
    except KeyError:
        raise JaxbertError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def override(cfg: Config, assignments: list[str]) -> Config:
    """Apply `section.field=value` strings, each value parsed as its field's type."""
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        section_name, dot, field_name = key.strip().partition(".")
        sections = [f.name for f in dataclasses.fields(cfg) if f.name != "preset"]
        if not sep or not dot or section_name not in sections:
            raise JaxbertError(f"--set {assignment!r} is not section.field=value with section one of {sections}")
        section = getattr(cfg, section_name)
        hints = typing.get_type_hints(type(section))
        if field_name not in hints:
            raise JaxbertError(f"--set {assignment!r}: {section_name} has no field {field_name!r}; "
                               f"fields are {', '.join(hints)}")
        value = _parse(raw.strip(), hints[field_name], assignment)
        cfg = dataclasses.replace(cfg, **{section_name: dataclasses.replace(section, **{field_name: value})})
    return cfg


def _parse(raw: str, kind: type, assignment: str):
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return raw.lower() in ("true", "1")
        if kind is int:
            return int(float(raw)) if float(raw).is_integer() else int(raw)
        return kind(raw)
    except ValueError:
        raise JaxbertError(f"--set {assignment!r}: {raw!r} is not a valid {kind.__name__}") from None
