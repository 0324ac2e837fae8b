"""The `jaxbert` command line; the only place with process-level side effects (exit codes, stderr).

    jaxbert pretrain --preset d2l-tiny [--data DIR] --out RUN_DIR [--set section.field=value ...]
    jaxbert encode RUN_DIR "a crane is flying"
    jaxbert encode RUN_DIR --pair "a crane driver came" "he just left"
"""

import argparse
import sys
from pathlib import Path

from jaxbert import config, rundir
from jaxbert.errors import JaxbertError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxbert", description="BERT pretraining (MLM + NSP) in JAX/Flax.")
    sub = p.add_subparsers(dest="command", required=True)

    pre = sub.add_parser("pretrain", help="pretrain a BERT on WikiText-2")
    pre.add_argument("--preset", help=f"one of: {', '.join(config.PRESETS)} (default d2l-tiny; "
                                      "a resumed run keeps its own)")
    pre.add_argument("--data", help="folder with wiki.{train,valid}.tokens (default $JAXBERT_DATA, else download)")
    pre.add_argument("--out", required=True, type=Path, help="run directory to create")
    pre.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                     help="override one config field, e.g. train.steps=200 (repeatable)")
    mode = pre.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="replace the run in --out")

    enc = sub.add_parser("encode", help="print the contextual vectors of a sentence or a sentence pair")
    enc.add_argument("run_dir", type=Path)
    what = enc.add_mutually_exclusive_group(required=True)
    what.add_argument("sentence", nargs="?", help="one sentence")
    what.add_argument("--pair", nargs=2, metavar=("A", "B"), help="a sentence pair")
    return p


def pretrain(args) -> None:
    from jaxbert import train  # JAX is imported only for commands that need it

    if args.resume and not args.preset and (args.out / rundir.CONFIG).is_file():
        base = config.Config.load(args.out / rundir.CONFIG)
    else:
        base = config.preset(args.preset or "d2l-tiny")
    cfg = config.override(base, args.set)
    for line in train.run(cfg, args.out, data_dir=args.data, resume=args.resume, overwrite=args.overwrite):
        print(line)


def encode(args) -> None:
    import numpy as np

    from jaxbert.encode import load

    encoder = load(args.run_dir)
    texts = args.pair if args.pair else [args.sentence]
    tokens = encoder.tokens(*texts)
    vectors = np.asarray(encoder.encode(*texts))
    print("tokens:", " ".join(tokens))
    print("shape:", vectors.shape)
    width = max(len(t) for t in tokens)
    with np.printoptions(precision=4, suppress=True):
        for i, token in enumerate(tokens):
            print(f"{i:3d} {token:<{width}} {vectors[0, i, :3]} ...")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        {"pretrain": pretrain, "encode": encode}[args.command](args)
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
