"""Numerical parity with transformers: max relative error of each output, float32, CPU.

    python benchmarks/hf_parity.py [--run runs/d2l-tiny ...]

For random-initialised `transformers` BERTs (GELU with tied decoder; ReLU with untied decoder, as d2l-tiny),
imported with `jaxbert import`, and for a jaxbert-initialised d2l-tiny model exported with `jaxbert export`:
hidden states (valid positions), MLM logits (masked positions) and NSP logits on a padded batch of 8 sentence
pairs of length 64. Relative error = max |ours - theirs| / max |theirs|. Each `--run` (a trained run, e.g. the
one `make demo` leaves in runs/d2l-tiny) is exported too and compared on the same batch, and as a user meets it:
the README's pair through `AutoTokenizer` (hidden states, relative norm of the difference, and the NSP
probability of "B follows A") and `pipeline("fill-mask")` against `jaxbert fill-mask` (top-5 and probabilities).
"""

import argparse
import dataclasses
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import torch
import transformers
from flax import nnx

import jaxbert
from jaxbert import checkpoint, config, hf, optim, rundir
from jaxbert import tokenization
from jaxbert.encode import restore_run
from jaxbert.model import BertForPreTraining


def inputs(vocab_size, b=8, t=64, p=10, seed=0):
    rng = np.random.default_rng(seed)
    valid = rng.integers(t // 2, t + 1, b)
    ids = np.where(np.arange(t)[None] < valid[:, None], rng.integers(5, vocab_size, (b, t)), 0)
    segments = ((np.arange(t)[None] >= valid[:, None] // 2) & (np.arange(t)[None] < valid[:, None])).astype(np.int64)
    positions = np.stack([np.sort(rng.choice(np.arange(1, v), p, replace=False)) for v in valid])
    return ids, segments, valid, positions


def errors(hf_model, run_dir):
    _, _, ours, _ = restore_run(run_dir)
    ids, segments, valid, positions = inputs(hf_model.config.vocab_size)
    mask = (np.arange(ids.shape[1])[None] < valid[:, None]).astype(np.int64)
    with torch.no_grad():
        out = hf_model.eval()(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(segments),
                              attention_mask=torch.tensor(mask), output_hidden_states=True)
    x, mlm, nsp = ours(*(jnp.asarray(a, jnp.int32) for a in (ids, segments, valid, positions)))
    rel = lambda a, b: float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())
    h = out.hidden_states[-1].numpy()
    return (max(rel(np.asarray(x)[r, :n], h[r, :n]) for r, n in enumerate(valid)),
            rel(mlm, np.take_along_axis(out.prediction_logits.numpy(), positions[..., None], axis=1)),
            rel(np.asarray(nsp)[:, ::-1], out.seq_relationship_logits.numpy()))  # class 1 here = class 0 there


def vocab_dir(folder: Path, v: int) -> None:
    tok = tokenization.train_wordpiece([f"the quick brown fox number {i} jumps over it" for i in range(300)], v)
    tokenization.save_vocab(tok, folder / "vocab.txt")


def as_a_user(run_dir: Path, export_dir: Path, mask_text: str):
    """(hidden-state error, |NSP probability difference|, top-5 equal?, max fill-mask probability difference)."""
    enc = jaxbert.load(run_dir)
    tok = transformers.AutoTokenizer.from_pretrained(export_dir)
    model = transformers.BertForPreTraining.from_pretrained(export_dir).eval()
    a, b = "a crane driver came", "he just left"
    with torch.no_grad():
        out = model(**tok(a, b, return_tensors="pt"), output_hidden_states=True)
    ours, theirs = np.asarray(enc.encode(a, b)), out.hidden_states[-1].numpy()
    hidden = float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))
    nsp = abs(enc.next_sentence(a, b) - float(out.seq_relationship_logits.softmax(-1)[0, 0]))
    mask = mask_text.replace("<mask>", tok.mask_token)
    fill = transformers.pipeline("fill-mask", model=str(export_dir))
    guesses, top = enc.fill_mask(mask, 5)[0], fill(mask, top_k=5)
    same = [t for t, _ in guesses] == [fill.tokenizer.convert_ids_to_tokens(r["token"]) for r in top]
    return hidden, nsp, same, max(abs(p - r["score"]) for (_, p), r in zip(guesses, top)), guesses


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, nargs="*", default=[], help="trained run directories to export and compare")
    p.add_argument("--mask-text", default="the <mask> of the city .", help="fill-mask text (<mask> is replaced "
                                                                          "by the run's own mask token)")
    args = p.parse_args()
    rows, users = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, kw in [("import: BERT-mini shape, GELU, tied", dict(hidden_size=256, num_hidden_layers=4,
                                                                      num_attention_heads=4, intermediate_size=1024)),
                         ("import: d2l-tiny shape, ReLU, untied", dict(hidden_size=128, num_hidden_layers=2,
                                                                       num_attention_heads=2, intermediate_size=256,
                                                                       hidden_act="relu", tie_word_embeddings=False,
                                                                       layer_norm_eps=1e-6))]:
            torch.manual_seed(0)
            model = transformers.BertForPreTraining(transformers.BertConfig(vocab_size=100, **kw))
            folder = tmp / name.split(":")[1].split(",")[0].strip()
            model.save_pretrained(folder / "hf")
            vocab_dir(folder / "hf", 100)
            hf.import_checkpoint(folder / "hf", folder / "run")
            rows.append((name, *errors(model, folder / "run")))
        # jaxbert-initialised d2l-tiny, written as a run and exported.
        tok = tokenization.word_tokenizer(tokenization.build_word_vocab([[f"w{i}" for i in range(95)]], 1))
        cfg = config.preset("d2l-tiny")
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tok.get_vocab_size()))
        run = tmp / "tiny-run"
        run.mkdir()
        cfg.save(run / rundir.CONFIG)
        tok.save(str(run / rundir.TOKENIZER))
        params = nnx.state(BertForPreTraining(cfg.model, rngs=nnx.Rngs(0)), nnx.Param)
        mngr = checkpoint.manager(run)
        checkpoint.save(mngr, 0, params, optim.optimizer(cfg.optim, 1).init(params))
        mngr.wait_until_finished()
        hf.export(run, tmp / "tiny-hf")
        rows.append(("export: d2l-tiny (jaxbert init)",
                     *errors(transformers.BertForPreTraining.from_pretrained(tmp / "tiny-hf"), run)))
        for i, trained in enumerate(args.run):
            cfg = config.Config.load(trained / rundir.CONFIG)
            hf.export(trained, tmp / f"trained-{i}")
            name = f"export: {trained} ({cfg.preset}, step {rundir.latest_step(trained)})"
            rows.append((name, *errors(transformers.BertForPreTraining.from_pretrained(tmp / f"trained-{i}"),
                                       trained)))
            users.append((name, *as_a_user(trained, tmp / f"trained-{i}", args.mask_text)))
    print(f"transformers {transformers.__version__}, torch {torch.__version__}\n")
    print("| model | hidden states | MLM logits | NSP logits |")
    print("|---|---|---|---|")
    for name, *errs in rows:
        print(f"| {name} | " + " | ".join(f"{e:.1e}" for e in errs) + " |")
    if users:
        print(f"\nAs a user meets it (README pair through AutoTokenizer; fill-mask on {args.mask_text!r}):\n")
        print("| run | pair hidden states, rel. norm | NSP P(is next) diff | fill-mask top-5 equal | "
              "max prob diff | jaxbert's top-5 |")
        print("|---|---|---|---|---|---|")
        for name, hidden, nsp, same, prob, guesses in users:
            top = ", ".join(f"{t} {p:.3f}" for t, p in guesses)
            print(f"| {name} | {hidden:.1e} | {nsp:.1e} | {same} | {prob:.1e} | {top} |")


if __name__ == "__main__":
    main()
