"""Hugging Face `transformers` interop: export a run as a `BertForPreTraining` checkpoint, import one as a run.

    jaxbert export runs/tiny hf/tiny          # config.json, model.safetensors, tokenizer files
    jaxbert import hf/some-bert runs/imported  # model.safetensors or pytorch_model.bin

`name_table` is the one mapping between jaxbert's parameter tree and the `transformers` names; export and
import both read it, and each row says how a tensor's layout differs across the boundary:
- linear kernels are stored (in, out) here and (out, in) there, hence the transposes;
- the NSP head's two classes are in opposite order: jaxbert's batch contract says `nsp_labels` = 1 when B
  follows A (or A/B are in order, for SOP), while transformers and Google's checkpoints use class 0 = "B follows
  A" (`BertForNextSentencePrediction`, `cls.seq_relationship`). The rows of that head swap its two classes, so
  an export answers in transformers what jaxbert answers, and an import resumes with the head the right way.

Import is strict: a checkpoint that jaxbert cannot compute exactly (relative positions, a decoder, an
activation or a tensor it does not map) is refused with the difference named; heads that are simply absent
are reported and initialised afresh.
"""

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tokenizers import models

from jaxbert import rundir, storage
from jaxbert.config import ModelConfig, preset
from jaxbert.data import tokenization
from jaxbert.errors import JaxbertError
from jaxbert.model.bert import ACTIVATIONS, BertForPreTraining
from jaxbert.training import checkpoint, optim

Path_ = tuple  # a path in the parameter tree, e.g. ("layers", 0, "attention", "query", "kernel")


class Row(NamedTuple):
    """One parameter: where it lives on each side, and how its layout differs."""

    ours: Path_
    theirs: str
    transposed: bool = False  # (in, out) here, (out, in) there
    swap_classes: bool = False  # the NSP head: class 1 = "B follows A" here, class 0 there

    def to_theirs(self, value: np.ndarray) -> np.ndarray:
        value = value[..., ::-1] if self.swap_classes else value
        return np.ascontiguousarray(value.T if self.transposed else value)

    def to_ours(self, value: np.ndarray) -> np.ndarray:
        value = value.T if self.transposed else value
        return np.ascontiguousarray(value[..., ::-1] if self.swap_classes else value)


def name_table(cfg: ModelConfig) -> list[Row]:
    """A `Row` for every parameter of `BertForPreTraining`."""

    def dense(ours, theirs, swap=False):
        return [Row(ours + ("kernel",), theirs + ".weight", True, swap),
                Row(ours + ("bias",), theirs + ".bias", False, swap)]

    def norm(ours, theirs):
        return [Row(ours + ("scale",), theirs + ".weight"), Row(ours + ("bias",), theirs + ".bias")]

    rows = [Row(("embeddings", name, "embedding"), f"bert.embeddings.{name}.weight")
            for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
    rows += norm(("embeddings", "layer_norm"), "bert.embeddings.LayerNorm")
    for i in range(cfg.num_hidden_layers):
        ours, theirs = ("layers", i), f"bert.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            rows += dense(ours + ("attention", name), f"{theirs}.attention.self.{name}")
        rows += dense(ours + ("attention", "output"), f"{theirs}.attention.output.dense")
        rows += norm(ours + ("attention", "layer_norm"), f"{theirs}.attention.output.LayerNorm")
        rows += dense(ours + ("intermediate",), f"{theirs}.intermediate.dense")
        rows += dense(ours + ("output",), f"{theirs}.output.dense")
        rows += norm(ours + ("layer_norm",), f"{theirs}.output.LayerNorm")
    rows += dense(("pooler",), "bert.pooler.dense")
    rows += dense(("mlm", "transform"), "cls.predictions.transform.dense")
    rows += norm(("mlm", "layer_norm"), "cls.predictions.transform.LayerNorm")
    rows += [Row(("mlm", "bias"), "cls.predictions.bias")]
    if not cfg.tie_word_embeddings:
        rows += [Row(("mlm", "decoder"), "cls.predictions.decoder.weight", True)]
    rows += dense(("nsp",), "cls.seq_relationship", swap=True)
    return rows


def classifier_table(cfg: ModelConfig) -> list[Row]:
    """A `Row` for every parameter of a fine-tuned `finetune.Classifier` that `BertForSequenceClassification`
    has: the encoder and pooler (under `bert`), and the head (`classifier`)."""
    rows = [row._replace(ours=("bert",) + row.ours) for row in name_table(cfg) if row.theirs.startswith("bert.")]
    return rows + [Row(("classifier", "kernel"), "classifier.weight", True), Row(("classifier", "bias"),
                                                                                  "classifier.bias")]


def span_table(cfg: ModelConfig) -> list[Row]:
    """A `Row` for every parameter of a SQuAD-tuned `qa.SpanModel` in `BertForQuestionAnswering`."""
    return classifier_table(cfg)[:-2] + [Row(("qa_outputs", "kernel"), "qa_outputs.weight", True),
                                         Row(("qa_outputs", "bias"), "qa_outputs.bias")]


# --- export ---------------------------------------------------------------------------------------------

# ModelConfig fields with no BertConfig meaning: transformers' `dtype` is how the weights are stored, ours how
# jaxbert computes (the exported weights are float32 either way).
JAXBERT_ONLY = ("dtype", "scan_layers", "remat")


def hf_config(cfg: ModelConfig, tok) -> dict:
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in JAXBERT_ONLY}
    return {"architectures": ["BertForPreTraining"], "model_type": "bert", **fields,
            "pad_token_id": tokenization.special_ids(tok).pad}


def export(run_dir: Path, out_dir: Path) -> list[str]:
    """Write `out_dir` as a transformers checkpoint of the run's latest parameters; returns the files."""
    from safetensors.numpy import save_file

    from jaxbert.encode import restore_run
    from jaxbert.finetuning import runs

    out_dir = Path(out_dir)
    classifier = (storage.path(run_dir) / runs.SETTINGS).is_file()  # a `jaxbert finetune` output: a head, not MLM/NSP
    if classifier:
        settings, cfg, tok, model = runs.restore(run_dir)
    else:
        cfg, tok, model, _ = restore_run(run_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise JaxbertError(f"{out_dir} is not empty; choose a new output directory")
    flat = _flat(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    if cfg.model.scan_layers:
        flat = unstack_layers(flat)
    squad = classifier and settings["task"] == "squad"
    table = (span_table if squad else classifier_table)(cfg.model) if classifier else name_table(cfg.model)
    tensors = {row.theirs: row.to_theirs(np.asarray(flat[row.ours], dtype=np.float32)) for row in table}
    hf = hf_config(cfg.model, tok)
    if squad:
        hf.update(architectures=["BertForQuestionAnswering"])
    elif classifier:
        names = settings["label_names"]
        hf.update(architectures=["BertForSequenceClassification"], id2label=dict(enumerate(names)),
                  label2id={name: i for i, name in enumerate(names)}, problem_type="single_label_classification")
    elif not cfg.model.tie_word_embeddings:
        # transformers computes the MLM logits with decoder.bias, which it ties to cls.predictions.bias only
        # along with the decoder weight: an untied checkpoint carries both, as transformers writes it.
        tensors["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"].copy()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    # A classifier was fine-tuned (and `jaxbert predict` runs) on inputs cut at its --max-len: transformers cuts at
    # model_max_length when asked to truncate, so the two see the same tokens.
    cut = settings["max_len"] if classifier and not squad else cfg.model.max_position_embeddings
    _export_tokenizer(tok, out_dir, cut)
    return sorted(p.name for p in out_dir.iterdir())


def _export_tokenizer(tok, out_dir: Path, max_len: int) -> None:
    tok.save(str(out_dir / "tokenizer.json"))
    if isinstance(tok.model, models.WordPiece):
        tokenization.save_vocab(tok, out_dir / "vocab.txt")
        names = dict(zip(("pad", "unk", "cls", "sep", "mask"), tokenization.BERT_SPECIALS))
        normalizer = json.loads(tok.to_str())["normalizer"] or {}
        extra = {"tokenizer_class": "BertTokenizer", "do_lower_case": bool(normalizer.get("lowercase", True))}
    elif isinstance(tok.model, models.WordLevel):
        # The book's words are not BERT's basic tokenization, so no BertTokenizer: the fast tokenizer file
        # (whitespace split, lower-casing, <cls> A <sep> B <sep>) reproduces the ids exactly.
        names = {name: f"<{name}>" for name in ("pad", "unk", "cls", "sep", "mask")}
        extra = {"tokenizer_class": "PreTrainedTokenizerFast"}
    else:
        raise JaxbertError(f"cannot export a {type(tok.model).__name__} tokenizer to transformers; "
                           "use WordPiece or the word-level tokenizer")
    special = {f"{k}_token": v for k, v in names.items()}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    # Segment ids are part of the model's input: without `token_type_ids` in this list, a fast tokenizer returns
    # none, and transformers embeds sentence B of a pair as segment 0.
    config = {**extra, **special, "model_max_length": max_len, "padding_side": "right",
              "model_input_names": ["input_ids", "token_type_ids", "attention_mask"]}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


# --- import ---------------------------------------------------------------------------------------------

def read_weights(hf_dir: Path) -> dict[str, np.ndarray]:
    """The checkpoint's tensors by transformers name, from model.safetensors or pytorch_model.bin; the
    LayerNorm `gamma`/`beta` of older conversions from TensorFlow are renamed `weight`/`bias`, as transformers
    does when it loads them."""
    old = {".LayerNorm.gamma": ".LayerNorm.weight", ".LayerNorm.beta": ".LayerNorm.bias"}
    rename = lambda k: next((k.removesuffix(a) + b for a, b in old.items() if k.endswith(a)), k)
    return {rename(k): v for k, v in _read_tensors(hf_dir).items()}


def _read_tensors(hf_dir: Path) -> dict[str, np.ndarray]:
    if (hf_dir / "model.safetensors").is_file():
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return load_file(str(hf_dir / "model.safetensors"))
        except SafetensorError as e:
            raise JaxbertError(f"{hf_dir / 'model.safetensors'} is not a valid safetensors file ({e})") from None
    if (hf_dir / "pytorch_model.bin").is_file():
        try:
            import torch
        except ImportError:
            raise JaxbertError("reading pytorch_model.bin needs PyTorch (pip install torch), or convert the "
                               "checkpoint to model.safetensors") from None
        state = torch.load(hf_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    raise JaxbertError(f"{hf_dir} holds neither model.safetensors nor pytorch_model.bin; "
                       "pass a transformers BERT checkpoint folder")


# config.json settings that change what a BERT computes, and the one value of each that jaxbert computes.
FIXED_SETTINGS = {"position_embedding_type": "absolute", "is_decoder": False, "add_cross_attention": False}
# Tensors a checkpoint may hold besides the table's: a buffer of positions, and the decoder bias (see import).
IGNORED_TENSORS = ("bert.embeddings.position_ids", "cls.predictions.decoder.bias")


def check_settings(hf: dict) -> None:
    """Refuse, naming it, a config.json setting under which jaxbert's model would compute something else."""
    for key, value in FIXED_SETTINGS.items():
        if hf.get(key, value) != value:
            raise JaxbertError(f"config.json has {key}={hf[key]!r}, but jaxbert's BERT computes only {key}="
                               f"{value!r}; this checkpoint would give other outputs here, so it is not imported")
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise JaxbertError(f"config.json has hidden_act={act!r}, which jaxbert does not compute (it has "
                           f"{', '.join(ACTIVATIONS)}); this checkpoint is not imported")


def check_tensors(weights: dict[str, np.ndarray], cfg: ModelConfig) -> None:
    """Refuse, naming them, tensors that jaxbert's model has no place for (absent heads are fine)."""
    unknown = sorted(set(weights) - {row.theirs for row in name_table(cfg)} - set(IGNORED_TENSORS))
    embeddings = weights.get("bert.embeddings.word_embeddings.weight")
    if cfg.tie_word_embeddings and "cls.predictions.decoder.weight" in unknown:
        decoder = weights["cls.predictions.decoder.weight"]
        if embeddings is None or not np.array_equal(decoder, embeddings):
            raise JaxbertError("cls.predictions.decoder.weight differs from the word embeddings, but config.json "
                               "ties them (tie_word_embeddings); set tie_word_embeddings to false there if the "
                               "decoder is its own")
        unknown.remove("cls.predictions.decoder.weight")  # the same tensor, saved twice
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise JaxbertError(f"the checkpoint holds tensors that jaxbert's BERT has no place for "
                           f"({', '.join(unknown[:3])}{more}); import a BertModel, BertForPreTraining, "
                           "BertForMaskedLM or BertForNextSentencePrediction checkpoint")


def model_config(hf: dict, vocab_size: int) -> ModelConfig:
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in hf.items() if k in fields and k not in ("vocab_size", *JAXBERT_ONLY)},
                       vocab_size=hf.get("vocab_size", vocab_size))


def import_checkpoint(hf_dir: Path, run_dir: Path, *, base: str = "bert-base") -> list[str]:
    """Turn a transformers BERT checkpoint into a jaxbert run (step 0); returns the parameter groups that
    were missing there and initialised afresh (e.g. the NSP head of a `BertForMaskedLM`)."""
    hf_dir, run_dir = Path(hf_dir), Path(run_dir)
    try:
        hf = json.loads((hf_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise JaxbertError(f"cannot read {hf_dir / 'config.json'} ({e}); pass a transformers checkpoint") from None
    if hf.get("model_type") != "bert":
        raise JaxbertError(f"config.json has model_type {hf.get('model_type')!r}; only BERT checkpoints import")
    check_settings(hf)
    tok = _import_tokenizer(hf_dir)
    weights = read_weights(hf_dir)
    if not any(k.startswith(("bert.", "cls.")) for k in weights):  # a bare BertModel
        weights = {f"bert.{k}": v for k, v in weights.items()}
    base_cfg, model_cfg = preset(base), model_config(hf, tok.get_vocab_size())
    data_cfg = dataclasses.replace(base_cfg.data, max_len=min(base_cfg.data.max_len, model_cfg.max_position_embeddings))
    cfg = dataclasses.replace(base_cfg, preset="imported", model=model_cfg, data=data_cfg)
    if cfg.model.vocab_size != tok.get_vocab_size():
        raise JaxbertError(f"config.json says vocab_size {cfg.model.vocab_size} but the tokenizer has "
                           f"{tok.get_vocab_size()} tokens; pass a checkpoint with its own tokenizer")
    check_tensors(weights, cfg.model)
    model = BertForPreTraining(cfg.model, rngs=nnx.Rngs(params=cfg.train.seed))
    params = nnx.state(model, nnx.Param)
    flat = _flat(nnx.to_pure_dict(params))
    missing = []
    for row in name_table(cfg.model):
        value = weights.get(row.theirs)
        if row.theirs == "cls.predictions.bias" and "cls.predictions.decoder.bias" in weights:
            value = weights["cls.predictions.decoder.bias"]  # the one transformers computes with
        if value is None:
            missing.append(row.theirs)
            continue
        value = row.to_ours(value)
        if value.shape != flat[row.ours].shape:
            raise JaxbertError(f"{row.theirs} has shape {value.shape} in the checkpoint, expected "
                               f"{flat[row.ours].shape}")
        flat[row.ours] = jnp.asarray(value, jnp.float32)
    nnx.replace_by_pure_dict(params, _nest(flat))
    rundir.claim(run_dir, resume=False, overwrite=False)  # refuses a directory that holds anything, or is held
    try:
        tokenization.save(tok, run_dir / rundir.TOKENIZER)
        cfg.save(run_dir / rundir.CONFIG)
        opt_state = optim.optimizer(cfg.optim, cfg.train.steps).init(params)
        mngr = checkpoint.manager(run_dir)
        checkpoint.save(mngr, 0, params, opt_state)
        mngr.wait_until_finished()
    finally:
        rundir.release(run_dir)
    return sorted({n.rsplit(".", 1)[0] for n in missing})


def _import_tokenizer(hf_dir: Path):
    if (hf_dir / "tokenizer.json").is_file():
        return tokenization.load_any(hf_dir / "tokenizer.json")
    if (hf_dir / "vocab.txt").is_file():
        try:
            lower = json.loads((hf_dir / "tokenizer_config.json").read_text()).get("do_lower_case", True)
        except (OSError, json.JSONDecodeError):
            lower = True
        return tokenization.wordpiece_from_vocab(hf_dir / "vocab.txt", lowercase=lower)
    raise JaxbertError(f"{hf_dir} holds no tokenizer.json or vocab.txt; a run needs its tokenizer")


def unstack_layers(flat: dict[Path_, jax.Array]) -> dict[Path_, jax.Array]:
    """A scan_layers model's (L, ...) parameters under `layers` as L per-layer ones, the unrolled layout."""
    out = {}
    for path, value in flat.items():
        if "layers" not in path:
            out[path] = value
            continue
        i = path.index("layers") + 1
        out.update({path[:i] + (layer,) + path[i:]: value[layer] for layer in range(value.shape[0])})
    return out


def _flat(tree: dict, prefix: Path_ = ()) -> dict[Path_, jax.Array]:
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, prefix + (k,)) if isinstance(v, dict) else {prefix + (k,): v})
    return out


def _nest(flat: dict[Path_, jax.Array]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = value
    return tree

