"""The `jaxbert` command line; the only place with process-level side effects (exit codes, stderr).

    jaxbert tokenizer train --corpus 'texts/*.txt' --vocab-size 30522 --out TOK_DIR
    jaxbert prepare --corpus 'texts/*.txt' --tokenizer TOK_DIR --out PREP_DIR
    jaxbert pretrain --preset d2l-tiny [--data DIR] --out RUN_DIR [--set section.field=value ...]
    jaxbert pretrain ... --budget 10m      # train.steps fitted to 10 minutes of wall-clock time
    jaxbert encode RUN_DIR "a crane is flying"
    jaxbert encode RUN_DIR --pair "a crane driver came" "he just left"
    jaxbert fill-mask RUN_DIR "a crane is <mask> ."   # the MLM head's top-k words and probabilities
    jaxbert finetune --task sst2 --data GLUE/SST-2 --init RUN_DIR --out FT_DIR   # a classification head
    jaxbert predict FT_DIR < texts.txt     # label texts (pairs as A<TAB>B) with a fine-tuned model
    jaxbert glue RUN_DIR --data GLUE_DIR   # SST-2, MRPC, RTE, CoLA: pretrained vs random init, 5 seeds
    jaxbert transfer RUN_DIR --task imdb --data aclImdb_v1.tar.gz --labels 100 500 all   # vs random init, TF-IDF
    jaxbert plan --preset bert-large --devices 8 --batch 256   # parameters, FLOPs, memory per device
    jaxbert export RUN_DIR HF_DIR          # a transformers BertForPreTraining checkpoint
    jaxbert import HF_DIR RUN_DIR          # a transformers BERT checkpoint as a jaxbert run
"""

import argparse
import dataclasses
import sys
import textwrap
from pathlib import Path

from jaxbert import config, rundir, storage
from jaxbert.data import corpus
from jaxbert.errors import JaxbertError
from jaxbert.finetuning import tasks


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxbert", description="BERT pretraining (MLM + NSP) in JAX/Flax.")
    sub = p.add_subparsers(dest="command", required=True)

    pre = sub.add_parser("pretrain", help="pretrain a BERT on prepared text (default: WikiText-2, as the book)")
    pre.add_argument("--preset", help=f"one of: {', '.join(config.PRESETS)} (default d2l-tiny; "
                                      "a resumed run keeps its own)")
    pre.add_argument("--data", nargs="+", metavar="DIR",
                     help="a `jaxbert prepare` directory, several (a corpus prepared in parts, trained on as one in "
                          "the order given), or a folder with wiki.{train,valid}.tokens (default $JAXBERT_DATA, "
                          "else download WikiText-2)")
    pre.add_argument("--out", type=run_path, help="run directory to create (required unless --dry-run)")
    pre.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                     help="override one config field, e.g. train.steps=200 (repeatable)")
    pre.add_argument("--budget", type=_duration, metavar="TIME",
                     help="train for this wall-clock time (e.g. 600s, 10m, 1h): train.steps is fitted at the "
                          "start, so the learning-rate schedule ends at the budget")
    pre.add_argument("--coordinator", metavar="HOST:PORT",
                     help="train as one of --num-processes processes (one per host, or several on one machine), "
                          "joined at process 0's HOST:PORT; start every process with the same arguments and its "
                          "own --process-id. 'auto': read the group from the cluster (SLURM, TPU pods, Open MPI)")
    pre.add_argument("--num-processes", type=int)
    pre.add_argument("--process-id", type=int)
    pre.add_argument("--local-device-ids", type=_device_ids, metavar="IDS",
                     help="use only these of the host's devices, e.g. 0 or 0,1 (one process per GPU)")
    pre.add_argument("--dry-run", action="store_true",
                     help="print the resolved config, the parameter count and the time per step (a few steps "
                          "timed on the data), then stop; writes nothing")
    mode = pre.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="replace the run in --out")

    def corpus_args(p, required=True):
        p.add_argument("--corpus", nargs="+", required=required, metavar="FILE_OR_GLOB",
                       help="input files (or IMDb's aclImdb_v1.tar.gz or aclImdb/ folder)")
        p.add_argument("--format", choices=corpus.FORMATS, default="auto",
                       help="wikitext, text (blank line between documents), jsonl, imdb (the unlabelled and "
                            "training reviews, never the test ones); auto: by file extension, IMDb by its layout")
        p.add_argument("--text-field", default="text", help="JSON lines: the field holding the text")
        p.add_argument("--split-sentences", action="store_true",
                       help="text: split lines into sentences (default: one sentence per line)")

    tok = sub.add_parser("tokenizer", help="train a tokenizer").add_subparsers(dest="tokenizer_command",
                                                                               required=True)
    tt = tok.add_parser("train", help="train a WordPiece (or the book's word-level) vocabulary")
    corpus_args(tt)
    tt.add_argument("--kind", choices=("wordpiece", "word"), default="wordpiece")
    tt.add_argument("--vocab-size", type=int, default=30522, help="WordPiece vocabulary size")
    tt.add_argument("--min-freq", type=int, default=5, help="word-level: keep words seen this often")
    tt.add_argument("--cased", action="store_true", help="WordPiece: keep case (default: lower-case)")
    tt.add_argument("--keep-accents", action="store_true", help="WordPiece: keep accents when lower-casing")
    tt.add_argument("--out", required=True, type=Path, help="folder for tokenizer.json (and vocab.txt)")

    prep = sub.add_parser("prepare", help="tokenize a corpus into a prepared directory for pretraining")
    corpus_args(prep)
    prep.add_argument("--eval-corpus", nargs="+", default=[], metavar="FILE_OR_GLOB",
                      help="held-out files (default: a hashed share of the documents, --eval-fraction)")
    prep.add_argument("--eval-fraction", type=float, default=0.01)
    prep.add_argument("--tokenizer", required=True, type=Path,
                      help="tokenizer.json, vocab.txt (BERT WordPiece, uncased), or a folder holding one")
    prep.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    prep.add_argument("--out", required=True, type=Path)
    prep.add_argument("--overwrite", action="store_true", help="replace prepared data in --out")

    exp = sub.add_parser("export", help="write a run as a transformers BertForPreTraining checkpoint (a "
                                        "fine-tuned model as BertForSequenceClassification)")
    exp.add_argument("run_dir", type=run_path)
    exp.add_argument("out_dir", type=Path)
    imp = sub.add_parser("import", help="turn a transformers BERT checkpoint into a jaxbert run")
    imp.add_argument("hf_dir", type=Path)
    imp.add_argument("run_dir", type=Path)
    imp.add_argument("--preset", default="bert-base", help="where the data/optim/train settings come from")

    enc = sub.add_parser("encode", help="print the contextual vectors of a sentence or a sentence pair")
    enc.add_argument("run_dir", type=run_path)
    what = enc.add_mutually_exclusive_group(required=True)
    what.add_argument("sentence", nargs="?", help="one sentence")
    what.add_argument("--pair", nargs=2, metavar=("A", "B"), help="a sentence pair")
    enc.add_argument("--brief", action="store_true", help="print the tokens and the shape only, not the vectors")

    fill = sub.add_parser("fill-mask", help="print the MLM head's likeliest words for each mask token in a text")
    fill.add_argument("run_dir", type=run_path)
    fill.add_argument("text", help="a text with <mask> (word-level runs) or [MASK] (WordPiece runs)")
    fill.add_argument("--top-k", type=int, default=5, help="how many words per mask (default 5)")

    ft = sub.add_parser("finetune", help="fine-tune a run with a classification head on a task",
                        epilog="per-task defaults: " + "; ".join(f"{t.name}: {t.defaults_why}" for t in
                                                                   tasks.TASKS.values() if t.defaults_why))
    ft.add_argument("--task", required=True, choices=(*tasks.TASKS, "squad"),
                    help="sst2, cola, mrpc, rte, nli (sentence1, sentence2, label), imdb "
                    "or squad (extractive question answering, SQuAD v1.1)")
    ft.add_argument("--data", required=True, type=Path,
                    help="folder with train.tsv and dev.tsv (squad: train-v1.1.json and dev-v1.1.json; imdb: "
                         "aclImdb_v1.tar.gz or its aclImdb/ folder, scored on the test reviews)")
    ft.add_argument("--init", required=True, type=run_path, help="a jaxbert run (pretrained, or imported)")
    ft.add_argument("--random-init", action="store_true",
                    help="the run's architecture and tokenizer with fresh weights: the control")
    ft.add_argument("--out", required=True, type=Path, help="directory to create")
    for name, default in finetune_defaults().items():  # every field of config.FinetuneConfig
        flag = {"labelled": "labels"}.get(name, name).replace("_", "-")
        per_task = "".join(f"; {t.name}: {dict(t.defaults)[name]}" for t in tasks.TASKS.values()
                           if name in dict(t.defaults))
        ft.add_argument(f"--{flag}", dest=name, metavar=flag.upper().replace("-", "_"), type=type(default),
                        help=f"{FINETUNE_HELP[name]} (default {default}{per_task})")

    pr = sub.add_parser("predict", help="label texts with a fine-tuned model, one per line (pairs as A<TAB>B; "
                                        "SQuAD: QUESTION<TAB>CONTEXT, prints the answer)")
    pr.add_argument("model_dir", type=Path, help="a `jaxbert finetune` output directory")
    pr.add_argument("--file", type=Path, help="read texts from this file (default: standard input)")

    sq = sub.add_parser("squad-split", help="split one SQuAD v1.1 file into train.json and dev.json by article, "
                                            "for `finetune --task squad` when only one file is at hand")
    sq.add_argument("file", type=Path, help="a SQuAD v1.1 JSON file, e.g. dev-v1.1.json")
    sq.add_argument("--out", required=True, type=Path, help="folder to create, for finetune --data")
    sq.add_argument("--every", type=int, default=4,
                    help="hold out every N-th article in file order (default 4: a quarter of the articles)")

    sub.add_parser("presets", help="list the presets: shape, parameters, training FLOPs per token, defaults")

    pl = sub.add_parser("plan", help="parameters, FLOPs per step and memory per device of a preset, per sharding "
                                     "mode, before training")
    pl.add_argument("--preset", default="bert-base", help=f"one of: {', '.join(config.PRESETS)}")
    pl.add_argument("--devices", type=int, default=1, help="devices the batch and (under fsdp) the state split over")
    pl.add_argument("--batch", type=int, help="global batch in sentence pairs (default: the preset's)")
    pl.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="override one config field, e.g. data.max_len=512 (repeatable)")
    pl.add_argument("--no-compile", action="store_true", help="skip compiling the step (no activation memory)")

    tr = sub.add_parser("transfer", help="label efficiency: fine-tune a run and random init on N labels each (lr "
                                         "and epochs chosen on a validation slice), beside TF-IDF + logistic "
                                         "regression; write a table, JSON and a chart")
    tr.add_argument("run_dir", type=Path)
    tr.add_argument("--task", required=True, choices=tuple(tasks.TASKS), help="a classification task")
    tr.add_argument("--data", required=True, type=Path, help="the task's data, as for finetune")
    tr.add_argument("--labels", nargs="+", required=True, metavar="N",
                    help="labelled training examples per point, e.g. 100 500 2000 all")
    tr.add_argument("--seeds", type=int, default=5, help="fine-tuning seeds per arm at its chosen setting (default 5)")
    tr.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3, 3e-3],
                    help="the lr grid (default 1e-3 3e-3: lower rates never won for bert-tiny, docs/transfer.md)")
    tr.add_argument("--epochs", type=int, nargs="+", default=[8],
                    help="the epochs grid; within a fit the validation slice also picks the best epoch (default 8)")
    tr.add_argument("--max-len", type=int, help="tokens per example (default: finetune's for the task)")
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--validation", type=int, default=500,
                    help="validation slice size, scored after every epoch of every fit (default 500)")
    tr.add_argument("--dropout", type=float, default=0.1)
    tr.add_argument("--data-seed", type=int, default=0, help="the draws of the labels and the validation slice")
    tr.add_argument("--truncation", choices=("head", "head_tail"),
                    help="a long text keeps its head, or its first quarter and its end (default: finetune's for "
                         "the task)")
    tr.add_argument("--out", type=Path, help="report folder (default RUN_DIR/transfer-TASK)")

    gl = sub.add_parser("glue", help="GLUE-lite: fine-tune SST-2, MRPC, RTE and CoLA from a run and from random "
                                     "init over several seeds; write a table, JSON and a chart")
    gl.add_argument("run_dir", type=Path)
    gl.add_argument("--data", required=True, type=Path, help="folder holding SST-2/, MRPC/, RTE/ and CoLA/")
    gl.add_argument("--out", type=Path, help="report folder (default RUN_DIR/glue)")
    gl.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 for each initialisation (default 5)")
    gl.add_argument("--tasks", nargs="+", default=["sst2", "mrpc", "rte", "cola"], metavar="TASK")
    for name, parser in _subparsers(p):
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        more = f"\n\n{textwrap.fill(parser.epilog, 100)}" if parser.epilog else ""
        parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name]) + more
    return p


def _subparsers(parser: argparse.ArgumentParser, prefix: str = ""):
    """(name, parser) of every subcommand, nested ones as `tokenizer train`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + name, sub
                yield from _subparsers(sub, prefix + name + " ")


EXAMPLES = {
    "pretrain": ["jaxbert pretrain --preset d2l-tiny --out runs/tiny            # the book's run on WikiText-2",
                 "jaxbert pretrain --preset bert-tiny-cpu --data runs/prep --out runs/mine --budget 30m",
                 "jaxbert pretrain --preset bert-base --data runs/prep --out runs/base --budget 2h --dry-run",
                 "jaxbert pretrain --out runs/tiny --resume                    # after a crash or a kill"],
    "tokenizer": ["jaxbert tokenizer train --corpus 'texts/*.txt' --vocab-size 8192 --out runs/tok"],
    "tokenizer train": ["jaxbert tokenizer train --corpus 'texts/*.txt' --vocab-size 8192 --out runs/tok",
                        "jaxbert tokenizer train --corpus reviews.jsonl --text-field review --out runs/tok"],
    "prepare": ["jaxbert prepare --corpus 'texts/*.txt' --tokenizer runs/tok --out runs/prep",
                "jaxbert prepare --corpus aclImdb_v1.tar.gz --tokenizer vocab.txt --out runs/imdb-prep"],
    "export": ["jaxbert export runs/tiny hf/tiny    # then BertForPreTraining.from_pretrained('hf/tiny')"],
    "import": ["jaxbert import hf/bert-base-uncased runs/bert-base --preset bert-base"],
    "encode": ['jaxbert encode runs/tiny "a crane is flying"                       # 6 vectors',
               'jaxbert encode runs/tiny --pair "a crane driver came" "he just left"  # 10 vectors'],
    "fill-mask": ['jaxbert fill-mask runs/tiny "the <mask> of the river"           # word-level runs',
                  'jaxbert fill-mask runs/mine "the film was [MASK] ." --top-k 3   # WordPiece runs'],
    "finetune": ["jaxbert finetune --task sst2 --data glue/SST-2 --init runs/mine --out runs/sst2",
                 "jaxbert finetune --task imdb --data aclImdb_v1.tar.gz --init runs/mine --out runs/imdb --labels 500",
                 "jaxbert finetune --task squad --data squad/ --init runs/mine --out runs/squad --random-init"],
    "predict": ["echo 'a gripping, funny film' | jaxbert predict runs/sst2",
                "jaxbert predict runs/squad --file questions.tsv    # QUESTION<TAB>CONTEXT per line"],
    "squad-split": ["jaxbert squad-split squad/dev-v1.1.json --out runs/squad-split   # then finetune --task squad "
                    "--data runs/squad-split"],
    "presets": ["jaxbert presets"],
    "plan": ["jaxbert plan --preset bert-large --devices 8 --batch 256"],
    "transfer": ["jaxbert transfer runs/mine --task imdb --data aclImdb_v1.tar.gz --labels 100 500 --seeds 5"],
    "glue": ["jaxbert glue runs/mine --data glue/ --seeds 5"],
}


def run_path(text: str):
    """A run directory: a local folder, or a bucket path (gs://, s3://)."""
    try:
        return storage.path(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e}; give a local folder or a bucket path") from None


def _device_ids(text: str) -> list[int]:
    """Device ids in `0` or `0,1,3`."""
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of device ids; write e.g. 0 or 0,1") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"{text!r} must list distinct non-negative device ids")
    return ids


def _duration(text: str) -> float:
    """Seconds in `90`, `90s`, `10m` or `1.5h`."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 600s, 10m or 1h") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive duration")
    return seconds


FINETUNE_HELP = {
    "max_len": "tokens per example (pairs cut longest-first); at most the model's positions",
    "batch_size": "examples per step",
    "epochs": "passes over the training examples; the one the validation slice scores best is kept",
    "learning_rate": "AdamW's peak rate, after 10%% warmup, decaying linearly to 0",
    "warmup_fraction": "share of the steps spent warming up",
    "weight_decay": "AdamW weight decay on weight matrices",
    "seed": "head initialisation, dropout and example order",
    "max_train_examples": "use only the first N lines of the training file (0: all): quick runs",
    "labelled": "train on a class-balanced draw of N labelled examples (0: all)",
    "validation": "training examples held out, class-balanced (at most a tenth), to choose the epoch",
    "data_seed": "the draws of --labels and the validation slice, shared by every --seed and --random-init",
    "dropout": "hidden and attention dropout while fine-tuning, whatever the run pretrained with",
    "truncation": "head: a long single text keeps its start; head_tail: its first quarter and its end",
}


def finetune_defaults() -> dict:
    return {f.name: f.default for f in dataclasses.fields(config.FinetuneConfig) if f.name != "task"}


def finetune_settings(task: str, given: dict) -> dict:
    """FinetuneConfig's fields for `task`: the flags given (not None), else the task's defaults, else the
    dataclass's."""
    per_task = dict(tasks.TASKS[task].defaults) if task in tasks.TASKS else {}
    return {k: given[k] if given.get(k) is not None else per_task.get(k, default)
            for k, default in finetune_defaults().items()}


def pretrain(args) -> None:
    from jaxbert.training import train  # JAX is imported only for commands that need it

    # A resumed run starts from its own config; --set may then change what `train.resumed_config` allows, and
    # a --preset other than the run's is refused there, naming both.
    if args.out is None and not args.dry_run:
        raise JaxbertError("pretrain needs --out RUN_DIR, the run directory to create (or --dry-run)")
    saved = args.out / rundir.CONFIG if args.out else None
    base = config.Config.load(saved) if args.resume and saved and saved.is_file() else None
    if base is None or (args.preset and args.preset != base.preset):
        base = config.preset(args.preset or "d2l-tiny")
    if args.budget and args.resume:
        raise JaxbertError("--budget fits train.steps when a run starts; a resumed run goes on to the steps it "
                           "was given, so drop --budget")
    cfg = config.override(base, args.set + ([f"train.budget_s={args.budget}"] if args.budget else []))
    if args.dry_run:
        from jaxbert.training.dry_run import dry_run

        for line in dry_run(cfg, args.data):
            print(line)
        return
    if (not args.resume and not args.budget and cfg.train.steps == config.GOOGLE_STEPS
            and not any(s.startswith("train.steps=") for s in args.set)):
        raise JaxbertError(f"--preset {cfg.preset} trains Google's {config.GOOGLE_STEPS:,} steps; give --budget "
                           "TIME or --set train.steps=N (--dry-run prints the time per step on this machine)")
    if args.coordinator:
        from jaxbert.training import sharding
        sharding.initialize(args.coordinator, args.num_processes, args.process_id, args.local_device_ids)
    elif args.num_processes is not None or args.process_id is not None or args.local_device_ids is not None:
        raise JaxbertError("--num-processes, --process-id and --local-device-ids need --coordinator (HOST:PORT or "
                           "auto)")
    for line in train.run(cfg, args.out, data_dir=args.data, resume=args.resume, overwrite=args.overwrite):
        print(line)


def tokenizer_train(args) -> None:
    from jaxbert.data import tokenization

    if (args.out / "tokenizer.json").exists():
        raise JaxbertError(f"{args.out} already holds a tokenizer.json; choose another --out")
    files = corpus.expand(args.corpus)
    sentences = (s for f in files for doc in corpus.iter_documents(
        f, args.format, text_field=args.text_field, split=args.split_sentences) for s in doc)
    if args.kind == "word":
        tok = tokenization.word_tokenizer(tokenization.build_word_vocab((s.lower().split() for s in sentences),
                                                                    args.min_freq))
    else:
        tok = tokenization.train_wordpiece(sentences, args.vocab_size, lowercase=not args.cased,
                                         strip_accents=False if args.keep_accents else None)
    args.out.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out / "tokenizer.json"))
    tokenization.save_vocab(tok, args.out / "vocab.txt")
    print(f"{args.kind} tokenizer with {tok.get_vocab_size()} tokens written to {args.out}")


def prepare(args) -> None:
    from jaxbert.data import prepare as prep
    from jaxbert.data import tokenization

    tok = tokenization.load_any(args.tokenizer)
    manifest = prep.prepare(corpus.expand(args.corpus), args.out, tok, fmt=args.format,
                            eval_files=corpus.expand(args.eval_corpus) if args.eval_corpus else [],
                            eval_fraction=args.eval_fraction, text_field=args.text_field,
                            split_sentences=args.split_sentences, seed=args.seed, overwrite=args.overwrite)
    for split, c in manifest["counts"].items():
        print(f"{split}: {c['documents']} documents ({c['single_sentence_documents']} of one sentence), "
              f"{c['sentences']} sentences, {c['tokens']} tokens")
    print(f"{manifest['empty_documents_skipped']} empty documents skipped; prepared data in {args.out}")


def export(args) -> None:
    from jaxbert.interop import hf

    files = hf.export(args.run_dir, args.out_dir)
    print(f"transformers checkpoint in {args.out_dir}: {', '.join(files)}")


def import_(args) -> None:
    from jaxbert.interop import hf

    missing = hf.import_checkpoint(args.hf_dir, args.run_dir, base=args.preset)
    if missing:
        print(f"not in the checkpoint, initialised afresh: {', '.join(missing)}")
    print(f"jaxbert run (step 0) in {args.run_dir}")


def encode(args) -> None:
    import numpy as np

    from jaxbert.encode import load

    encoder = load(args.run_dir)
    texts = args.pair if args.pair else [args.sentence]
    tokens = encoder.tokens(*texts)
    vectors = np.asarray(encoder.encode(*texts))
    print("tokens:", " ".join(tokens))
    print("shape:", vectors.shape)
    if args.brief:
        return
    width = max(len(t) for t in tokens)
    with np.printoptions(precision=4, suppress=True):
        for i, token in enumerate(tokens):
            print(f"{i:3d} {token:<{width}} {vectors[0, i, :3]} ...")


def fill_mask(args) -> None:
    from jaxbert.encode import load

    if args.top_k < 1:
        raise JaxbertError(f"--top-k {args.top_k} must be at least 1")
    encoder = load(args.run_dir)
    guesses = encoder.fill_mask(args.text, args.top_k)
    print("tokens:", " ".join(encoder.tokens(args.text)))
    for n, top in enumerate(guesses, 1):
        print(f"mask {n}:" if len(guesses) > 1 else "mask:")
        for token, p in top:
            print(f"  {p:.4f}  {token}")


def squad_split(args) -> None:
    from jaxbert.finetuning import squad

    counts = squad.split_by_article(args.file, args.out, args.every)
    for name, c in counts.items():
        print(f"{args.out / (name + '.json')}: {c['articles']} articles, {c['questions']} questions")


def finetune(args) -> None:
    from jaxbert.finetuning import runs

    cfg = config.FinetuneConfig(task=args.task, **finetune_settings(args.task, vars(args)))
    best = runs.run(cfg, args.data, args.init, args.out, random_init=args.random_init)
    show = lambda split: ", ".join(f"{k.removeprefix(split + '_')} {v:.4f}" for k, v in best.items()
                                   if k.startswith(split + "_"))
    chosen = f"epoch {best['epoch']} (validation {show('val')})" if any(k.startswith("val_") for k in best) else \
        f"epoch {best['epoch']}"
    reported = "test" if any(k.startswith("test_") for k in best) else "dev"
    print(f"kept {chosen} in {args.out}: {reported} {show(reported)}")  # squad: exact_match and f1 in %


def predict(args) -> None:
    from jaxbert.finetuning import runs

    if args.file is not None and not args.file.is_file():
        raise JaxbertError(f"{args.file} does not exist; pass a text file with one input per line")
    lines = (args.file.read_text(encoding="utf-8") if args.file else sys.stdin.read()).splitlines()
    if not any(line.strip() for line in lines):
        raise JaxbertError(f"{args.file or 'standard input'} holds no text; give one input per line")
    # One output line per input line, in order: a blank input line gets a blank answer, so the output can be
    # pasted beside the input.
    filled = [i for i, line in enumerate(lines) if line.strip()]
    texts = [tuple(lines[i].split("\t", 1)) if "\t" in lines[i] else lines[i] for i in filled]
    answers = [""] * len(lines)
    if runs.read_settings(args.model_dir)["task"] == "squad":
        if not all(isinstance(t, tuple) for t in texts):
            raise JaxbertError("a SQuAD model answers a question about a context: give each as QUESTION<TAB>CONTEXT")
        for i, answer in zip(filled, runs.answer(args.model_dir, texts)):
            answers[i] = answer
    else:
        answers = ["\t"] * len(lines)
        for i, (label, p) in zip(filled, runs.classify(args.model_dir, texts)):
            answers[i] = f"{label}\t{p:.4f}"
    for answer, line in zip(answers, lines):
        print(f"{answer}\t{line}")


def glue(args) -> None:
    from jaxbert.finetuning import glue as glue_lite

    out = args.out or args.run_dir / "glue"
    report = glue_lite.run(args.run_dir, args.data, out, seeds=args.seeds, task_names=args.tasks)
    print(glue_lite.markdown(report), end="")
    print(f"report in {out}: glue.md, glue.json, glue.png")


def presets(args) -> None:
    from jaxbert.model import sizes

    print("\n".join(sizes.table()))


def transfer(args) -> None:
    from jaxbert.finetuning import transfer as report

    try:
        labels = [0 if n == "all" else int(n) for n in args.labels]
    except ValueError:
        raise JaxbertError(f"--labels {' '.join(args.labels)}: give counts or 'all', e.g. --labels 100 500 all"
                           ) from None
    given = {k: getattr(args, k) for k in ("max_len", "batch_size", "validation", "dropout", "data_seed",
                                           "truncation")}
    base = config.FinetuneConfig(task=args.task, **finetune_settings(args.task, given))
    out = args.out or args.run_dir / f"transfer-{args.task}"
    result = report.run(args.run_dir, args.task, args.data, out, labels=labels, seeds=args.seeds, base=base,
                        learning_rates=args.learning_rates, epochs=args.epochs)
    print(report.markdown(result), end="")
    print(f"report in {out}: transfer.md, transfer.json, transfer.png")


def plan(args) -> None:
    from jaxbert.training import plan as planner

    cfg = config.override(config.preset(args.preset), args.set)
    report = planner.plan(cfg, args.devices, args.batch or cfg.train.batch_size, compile_step=not args.no_compile)
    print("\n".join(planner.lines(report)))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        command = {"pretrain": pretrain, "encode": encode, "prepare": prepare, "tokenizer": tokenizer_train,
                   "export": export, "import": import_, "fill-mask": fill_mask, "finetune": finetune,
                   "squad-split": squad_split, "glue": glue, "predict": predict, "plan": plan, "transfer": transfer,
                   "presets": presets}
        command[args.command](args)
    except JaxbertError as e:
        print(f"jaxbert: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxbert: interrupted; continue a pretraining run from its last checkpoint with --resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
