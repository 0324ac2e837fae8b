"""Encoding speed: `jaxbert.load(run).encode_many` / `.encode` against transformers `AutoModel` on the same weights,
each in a fresh process, on real WikiText-2 sentences.

    python benchmarks/encode_speed.py --data ../shared/data/wikitext-2 --vocab ../shared/data/bert-base-uncased

The weights are a randomly initialised transformers `BertForPreTraining` of each size, brought into jaxbert with
`jaxbert import`, with the bert-base-uncased WordPiece: both systems run the same model on the same token ids.
Per system and size: load time, the first batch (compilation included), sentences/s over the first pass (jaxbert
compiles once per batch shape it meets) and over a second, steady one (median of batches), the median latency of
one sentence at batch 1 (every padded width seen once before), and peak RSS.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

SIZES = {"bert-tiny": (2, 128, 2, 512), "bert-base": (12, 768, 12, 3072)}  # layers, hidden, heads, FFN


def sentences(data_dir: Path, count: int) -> list[str]:
    """The first `count` sentences of 5 to 60 words in wiki.valid.tokens (headings left out)."""
    out = []
    for line in (data_dir / "wiki.valid.tokens").read_text(encoding="utf-8").splitlines():
        out += [s + " ." for s in line.strip().split(" . ") if 5 <= len(s.split()) <= 60 and not s.startswith("=")]
    return out[:count]


def make_models(size: str, vocab_dir: Path, out: Path) -> tuple[Path, Path]:
    """The jaxbert run that `jaxbert import` makes of a transformers checkpoint of `size`, and that checkpoint."""
    import torch
    import transformers

    from jaxbert.data import tokenization
    from jaxbert.interop import hf

    layers, hidden, heads, ffn = SIZES[size]
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(transformers.BertConfig(
        vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn, max_position_embeddings=512))
    theirs, ours = out / f"{size}-hf", out / f"{size}-run"
    model.save_pretrained(theirs)
    hf._export_tokenizer(tokenization.wordpiece_from_vocab(vocab_dir / "vocab.txt"), theirs, 512)  # as `export`
    subprocess.run([sys.executable, "-m", "jaxbert.cli", "import", str(theirs), str(ours)], check=True,
                   capture_output=True)
    return ours, theirs


def load(system: str, model_dir: Path, batch: int):
    """(encode a list of texts at `batch`, encode one text) for `system`, loaded from `model_dir`."""
    if system == "jaxbert":
        import jaxbert

        enc = jaxbert.load(model_dir)
        return lambda texts: enc.encode_many(texts, batch_size=batch), lambda t: enc.encode(t).block_until_ready()
    import torch
    import transformers

    torch.set_grad_enabled(False)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval()
    return (lambda texts: model(**tok(texts, padding=True, return_tensors="pt")).last_hidden_state,
            lambda t: model(**tok([t], return_tensors="pt")).last_hidden_state)


def worker(system: str, model_dir: Path, texts: list[str], batch: int, singles: int) -> dict:
    start = time.perf_counter()
    many, one = load(system, model_dir, batch)
    loaded = time.perf_counter() - start
    (first,), _ = harness.timed(many, [texts[:batch]])
    (first_pass,), _ = harness.timed(many, [texts])  # jaxbert compiles each (batch, padded width) it meets once
    for text in texts[:singles]:  # likewise every padded width at batch 1
        one(text)
    per_batch, _ = harness.timed(many, [texts[i:i + batch] for i in range(0, len(texts) - batch + 1, batch)])
    latencies, _ = harness.timed(one, texts[:singles])
    return {"load_s": loaded, "first_batch_s": first, "first_pass_per_s": len(texts) / first_pass,
            "sentences_per_s": batch / statistics.median(per_batch), "latency_ms": 1e3 * statistics.median(latencies)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="folder with wiki.valid.tokens (required)")
    ap.add_argument("--vocab", type=Path, help="folder with the bert-base-uncased vocab.txt (required)")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--sentences", type=int, default=640)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--singles", type=int, default=50, help="sentences timed one at a time")
    ap.add_argument("--worker", choices=("jaxbert", "transformers"), help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--texts", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        texts = json.loads(args.texts.read_text())
        print(json.dumps(worker(args.worker, args.model, texts, args.batch, args.singles)))
        return
    if args.data is None or args.vocab is None:
        ap.error("--data and --vocab are required")

    print(harness.machine())
    texts = sentences(args.data, args.sentences)
    print(f"{len(texts)} WikiText-2 validation sentences, batch {args.batch}; {args.singles} at batch 1")
    harness.table("model", "system", "load (s)", "first batch (s)", "sentences/s, first pass", "sentences/s, steady",
                  "latency at batch 1 (ms)", "peak RSS (MB)")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "texts.json").write_text(json.dumps(texts))
        for size in args.sizes:
            for system, model_dir in zip(("jaxbert", "transformers"), make_models(size, args.vocab, Path(tmp))):
                r = harness.fresh([__file__, "--worker", system, "--model", str(model_dir), "--texts",
                                   str(Path(tmp) / "texts.json"), "--batch", str(args.batch), "--singles",
                                   str(args.singles)])
                if r:
                    harness.row(size, system, f"{r['load_s']:.2f}", f"{r['first_batch_s']:.2f}",
                                f"{r['first_pass_per_s']:.0f}", f"{r['sentences_per_s']:.0f}", f"{r['latency_ms']:.1f}",
                                f"{r['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    main()
