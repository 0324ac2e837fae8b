"""Encoding speed: `jaxbert.load(run).encode_many` / `.encode` against transformers `AutoModel` on the same weights,
each in a fresh process, on real WikiText-2 sentences.

    python benchmarks/encode_speed.py --data ../shared/data/wikitext-2 --vocab ../shared/data/bert-base-uncased

The weights are a randomly initialised transformers `BertForPreTraining` of each size (speed does not depend on
training), saved with the bert-base-uncased WordPiece tokenizer and brought into jaxbert with `jaxbert import`,
so both systems run the same model on the same token ids. Per system and size: the time to load the model, the
first batch of 64 (compilation included), sentences/s at batch 64 over the first pass through the sentences
(jaxbert compiles once per batch shape it meets) and in a second, steady pass (median over batches),
median latency of one sentence at batch 1 (after every padded width has been seen once), and peak RSS.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"bert-tiny": (2, 128, 2, 512), "bert-base": (12, 768, 12, 3072)}  # layers, hidden, heads, FFN


def sentences(data_dir: Path, count: int) -> list[str]:
    """The first `count` lines of wiki.valid.tokens that are sentences of 5 to 60 words (headings left out)."""
    out = []
    for line in (data_dir / "wiki.valid.tokens").read_text(encoding="utf-8").splitlines():
        for s in line.strip().split(" . "):
            if 5 <= len(s.split()) <= 60 and not s.startswith("="):
                out.append(s + " .")
                if len(out) == count:
                    return out
    return out


def make_models(size: str, vocab_dir: Path, out: Path) -> tuple[Path, Path]:
    import torch
    import transformers

    from jaxbert import hf as hf_module
    from jaxbert import tokenization

    layers, hidden, heads, ffn = SIZES[size]
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(transformers.BertConfig(
        vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn, max_position_embeddings=512))
    hf = out / f"{size}-hf"
    model.save_pretrained(hf)
    hf_module._export_tokenizer(tokenization.wordpiece_from_vocab(vocab_dir / "vocab.txt"), hf, 512)  # as `export`
    run = out / f"{size}-run"
    subprocess.run([sys.executable, "-m", "jaxbert.cli", "import", str(hf), str(run)], check=True,
                   capture_output=True)
    return hf, run


def worker(system: str, model_dir: Path, texts: list[str], batch: int, singles: int) -> dict:
    start = time.perf_counter()
    if system == "jaxbert":
        import jaxbert

        enc = jaxbert.load(model_dir)
        loaded = time.perf_counter() - start
        many = lambda chunk: enc.encode_many(chunk, batch_size=batch)
        one = lambda text: enc.encode(text).block_until_ready()
    else:
        import torch
        import transformers

        torch.set_grad_enabled(False)
        tok = transformers.AutoTokenizer.from_pretrained(model_dir)
        model = transformers.AutoModel.from_pretrained(model_dir).eval()
        loaded = time.perf_counter() - start

        def many(chunk):
            return model(**tok(chunk, padding=True, return_tensors="pt")).last_hidden_state

        one = lambda text: model(**tok([text], return_tensors="pt")).last_hidden_state
    t = time.perf_counter()
    many(texts[:batch])
    first = time.perf_counter() - t
    t = time.perf_counter()
    many(texts)  # the first pass: jaxbert compiles each (batch, padded width) shape it meets once
    first_pass = len(texts) / (time.perf_counter() - t)
    for text in texts[:singles]:  # likewise every padded width at batch 1
        one(text)
    per_batch = []
    for i in range(0, len(texts) - batch + 1, batch):
        t = time.perf_counter()
        many(texts[i:i + batch])
        per_batch.append(time.perf_counter() - t)
    latencies = []
    for text in texts[:singles]:
        t = time.perf_counter()
        one(text)
        latencies.append(time.perf_counter() - t)
    return {"load_s": loaded, "first_batch_s": first, "first_pass_per_s": first_pass,
            "sentences_per_s": batch / statistics.median(per_batch),
            "latency_ms": 1e3 * statistics.median(latencies),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


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
    from machine import cpu_line

    print(cpu_line())
    texts = sentences(args.data, args.sentences)
    print(f"{len(texts)} WikiText-2 validation sentences, batch {args.batch}; {args.singles} at batch 1")
    print("\n| model | system | load (s) | first batch (s) | sentences/s, first pass | sentences/s, steady | "
          "latency at batch 1 (ms) | peak RSS (MB) |\n|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "texts.json").write_text(json.dumps(texts))
        for size in args.sizes:
            hf, run = make_models(size, args.vocab, Path(tmp))
            for system, model_dir in (("jaxbert", run), ("transformers", hf)):
                proc = subprocess.run([sys.executable, __file__, "--worker", system, "--model", str(model_dir),
                                       "--texts", str(Path(tmp) / "texts.json"), "--batch", str(args.batch),
                                       "--singles", str(args.singles)], capture_output=True, text=True,
                                      cwd=Path(__file__).parent)
                if proc.returncode:
                    print(f"{size} {system}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"| {size} | {system} | {r['load_s']:.2f} | {r['first_batch_s']:.2f} | "
                      f"{r['first_pass_per_s']:.0f} | {r['sentences_per_s']:.0f} | {r['latency_ms']:.1f} | "
                      f"{r['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
