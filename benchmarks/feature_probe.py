"""What a pretrained run's encoder knows before fine-tuning: a linear probe of SST-2 sentiment on its frozen
features against the same probe on a randomly initialised encoder, and its word embeddings' nearest neighbours.

    python benchmarks/feature_probe.py RUN_DIR --data ../shared/data/glue/SST-2 [--words good,bad,film]

Features are the last layer's vectors, averaged over the valid tokens ("mean") or at `<cls>` ("cls"), for
GLUE-lite's SST-2 split (`glue.SETTINGS`: the first 8,000 training sentences, 48 tokens) and the whole dev set;
each is standardised on the training set, and a logistic regression (L2 1e-3, Adam, 500 full-batch steps) is
fitted on the training features and scored on dev. If pretraining learned anything a sentiment classifier
can use, its probe beats the random encoder's.
"""

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from jaxbert import finetune, glue, tasks  # noqa: E402
from jaxbert.encode import restore_run  # noqa: E402
from machine import cpu_line  # noqa: E402


def features(model, arrays, batch_size=256) -> dict[str, np.ndarray]:
    encode = nnx.jit(lambda m, ids, segs, lens: m.encode(ids, segs, lens))
    mean, cls = [], []
    for i in range(0, len(arrays["input_ids"]), batch_size):
        b = {k: v[i:i + batch_size] for k, v in arrays.items()}
        x = encode(model, b["input_ids"], b["segment_ids"], b["valid_lens"])
        valid = (jnp.arange(x.shape[1])[None] < b["valid_lens"][:, None])[..., None]
        mean.append(np.asarray((x * valid).sum(1) / valid.sum(1)))
        cls.append(np.asarray(x[:, 0]))
    return {"mean": np.concatenate(mean), "cls": np.concatenate(cls)}


def probe(train_x, train_y, dev_x, dev_y, steps=500) -> tuple[float, float]:
    """(training loss, dev accuracy) of an L2-regularised logistic regression on standardised features."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    x, xd = jnp.asarray((train_x - mu) / sd), jnp.asarray((dev_x - mu) / sd)
    classes = int(train_y.max()) + 1
    params = (jnp.zeros((x.shape[1], classes)), jnp.zeros(classes))
    tx = optax.adam(1e-2)
    loss = lambda p: (optax.softmax_cross_entropy_with_integer_labels(x @ p[0] + p[1], train_y).mean()
                      + 1e-3 * jnp.sum(p[0] ** 2))

    @jax.jit
    def step(p, s):
        value, g = jax.value_and_grad(loss)(p)
        u, s = tx.update(g, s)
        return optax.apply_updates(p, u), s, value

    state = tx.init(params)
    for _ in range(steps):
        params, state, value = step(params, state)
    return float(value), float(((xd @ params[0] + params[1]).argmax(-1) == dev_y).mean())


def neighbours(model, tok, words, k=8) -> dict[str, list[str]]:
    emb = np.asarray(model.embeddings.word_embeddings.embedding[...])
    centred = emb - emb.mean(0)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    out = {}
    for w in words:
        i = tok.token_to_id(w)
        if i is not None:
            out[w] = [tok.id_to_token(int(j)) for j in np.argsort(-(unit @ unit[i]))[1:k + 1]]
    return out


def anisotropy(model, pairs=2000) -> float:
    """Mean cosine between random rows of the word embeddings (about 0 at initialisation)."""
    emb = np.asarray(model.embeddings.word_embeddings.embedding[...])
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(emb), pairs), rng.integers(0, len(emb), pairs)
    return float((unit[i] * unit[j]).sum(1).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--data", type=Path, required=True, help="the SST-2 folder (train.tsv, dev.tsv)")
    p.add_argument("--words", default="good,bad,great,terrible,funny,boring,film,king,war")
    args = p.parse_args()
    print(cpu_line(), "|", args.run)
    source, tok, pretrained, _ = restore_run(args.run)
    task = tasks.get("sst2")
    train_arrays, _, dev_arrays = finetune.load_splits(glue.SETTINGS["sst2"], task, args.data, tok)
    random = finetune.Classifier(source.model, 2, rngs=nnx.Rngs(params=0)).bert
    for name, model in (("pretrained", pretrained), ("random", random)):
        tr, dv = features(model, train_arrays), features(model, dev_arrays)
        for pool in ("mean", "cls"):
            loss, acc = probe(tr[pool], train_arrays["labels"], dv[pool], dev_arrays["labels"])
            print(f"{name:10s} {pool:4s} probe: training loss {loss:.3f}, dev accuracy {acc:.3f}")
        print(f"{name:10s} word embeddings: mean cosine between random rows {anisotropy(model):.2f}")
    for word, near in neighbours(pretrained, tok, args.words.split(",")).items():
        print(f"nearest to {word!r}: {' '.join(near)}")


if __name__ == "__main__":
    main()
