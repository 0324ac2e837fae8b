"""Hugging Face `transformers` interop: export a run as a `BertForPreTraining` checkpoint, import one as a run.

    jaxbert export runs/tiny hf/tiny          # config.json, model.safetensors, tokenizer files
    jaxbert import hf/some-bert runs/imported  # model.safetensors or pytorch_model.bin

`name_table` is the one mapping between jaxbert's parameter tree and the `transformers` names; export and
import both read it. Linear kernels are stored (in, out) here and (out, in) there, hence the transposes.
"""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tokenizers import models

from jaxbert import checkpoint, optim, rundir
from jaxbert import tokenizer as tokenizers
from jaxbert.config import ModelConfig, preset
from jaxbert.errors import JaxbertError
from jaxbert.model import BertForPreTraining

Path_ = tuple  # a path in the parameter tree, e.g. ("layers", 0, "attention", "query", "kernel")


def name_table(cfg: ModelConfig) -> list[tuple[Path_, str, bool]]:
    """(jaxbert path, transformers name, transposed?) for every parameter of `BertForPreTraining`."""

    def dense(ours, theirs):
        return [(ours + ("kernel",), theirs + ".weight", True), (ours + ("bias",), theirs + ".bias", False)]

    def norm(ours, theirs):
        return [(ours + ("scale",), theirs + ".weight", False), (ours + ("bias",), theirs + ".bias", False)]

    rows = [((("embeddings", name, "embedding")), f"bert.embeddings.{name}.weight", False)
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
    rows += [(("mlm", "bias"), "cls.predictions.bias", False)]
    if not cfg.tie_word_embeddings:
        rows += [(("mlm", "decoder"), "cls.predictions.decoder.weight", True)]
    rows += dense(("nsp",), "cls.seq_relationship")
    return rows


# --- export ---------------------------------------------------------------------------------------------

def hf_config(cfg: ModelConfig, tok) -> dict:
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    return {"architectures": ["BertForPreTraining"], "model_type": "bert", **fields,
            "pad_token_id": tokenizers.special_ids(tok).pad}


def export(run_dir: Path, out_dir: Path) -> list[str]:
    """Write `out_dir` as a transformers checkpoint of the run's latest parameters; returns the files."""
    from safetensors.numpy import save_file

    from jaxbert.encode import restore_run

    cfg, tok, model, _ = restore_run(run_dir)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise JaxbertError(f"{out_dir} is not empty; choose a new output directory")
    flat = _flat(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    tensors = {}
    for path, name, transposed in name_table(cfg.model):
        value = np.asarray(flat[path], dtype=np.float32)
        tensors[name] = np.ascontiguousarray(value.T if transposed else value)
    if not cfg.model.tie_word_embeddings:
        # transformers computes the MLM logits with decoder.bias, which it ties to cls.predictions.bias only
        # along with the decoder weight: an untied checkpoint carries both, as transformers writes it.
        tensors["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"].copy()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(hf_config(cfg.model, tok), indent=2) + "\n")
    _export_tokenizer(tok, out_dir, cfg.model.max_position_embeddings)
    return sorted(p.name for p in out_dir.iterdir())


def _export_tokenizer(tok, out_dir: Path, max_len: int) -> None:
    tok.save(str(out_dir / "tokenizer.json"))
    if isinstance(tok.model, models.WordPiece):
        tokenizers.save_vocab(tok, out_dir / "vocab.txt")
        names = dict(zip(("pad", "unk", "cls", "sep", "mask"), tokenizers.BERT_SPECIALS))
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
    config = {**extra, **special, "model_max_length": max_len}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


# --- import ---------------------------------------------------------------------------------------------

def read_weights(hf_dir: Path) -> dict[str, np.ndarray]:
    """The checkpoint's tensors by transformers name, from model.safetensors or pytorch_model.bin."""
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


def model_config(hf: dict, vocab_size: int) -> ModelConfig:
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in hf.items() if k in fields and k != "vocab_size"},
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
    model = BertForPreTraining(cfg.model, rngs=nnx.Rngs(params=cfg.train.seed))
    params = nnx.state(model, nnx.Param)
    flat = _flat(nnx.to_pure_dict(params))
    missing = []
    for path, name, transposed in name_table(cfg.model):
        value = weights.get(name)
        if name == "cls.predictions.bias" and "cls.predictions.decoder.bias" in weights:
            value = weights["cls.predictions.decoder.bias"]  # the one transformers computes with
        if value is None:
            missing.append(name)
            continue
        value = value.T if transposed else value
        if value.shape != flat[path].shape:
            raise JaxbertError(f"{name} has shape {value.shape} in the checkpoint, expected {flat[path].shape}")
        flat[path] = jnp.asarray(value, jnp.float32)
    nnx.replace_by_pure_dict(params, _nest(flat))
    rundir.claim(run_dir, resume=False, overwrite=False)  # refuses a directory that holds anything
    tok.save(str(run_dir / rundir.TOKENIZER))
    cfg.save(run_dir / rundir.CONFIG)
    opt_state = optim.optimizer(cfg.optim, cfg.train.steps).init(params)
    mngr = checkpoint.manager(run_dir)
    checkpoint.save(mngr, 0, params, opt_state)
    mngr.wait_until_finished()
    return sorted({n.rsplit(".", 1)[0] for n in missing})


def _import_tokenizer(hf_dir: Path):
    if (hf_dir / "tokenizer.json").is_file():
        return tokenizers.load_any(hf_dir / "tokenizer.json")
    if (hf_dir / "vocab.txt").is_file():
        try:
            lower = json.loads((hf_dir / "tokenizer_config.json").read_text()).get("do_lower_case", True)
        except (OSError, json.JSONDecodeError):
            lower = True
        return tokenizers.wordpiece_from_vocab(hf_dir / "vocab.txt", lowercase=lower)
    raise JaxbertError(f"{hf_dir} holds no tokenizer.json or vocab.txt; a run needs its tokenizer")


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

