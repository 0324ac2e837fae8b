"""Run directories in a bucket: `--out gs://...` trains, resumes, refuses a second run, and serves encode and
export, against a GCS server on 127.0.0.1 (tests/gcs_emulator.py), equal to the same run in a local folder."""

import json
import os
import subprocess
import sys

import urllib.parse
import urllib.request

import pytest

from conftest import TINY
from gcs_emulator import serve
from jaxbert import storage

BUCKET = "jaxbert-test"


def test_local_paths_are_made_absolute_and_other_schemes_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert os.fspath(storage.path("runs/a")) == str(tmp_path / "runs" / "a")
    assert os.fspath(storage.path("gs://b/runs/a")) == "gs://b/runs/a" and storage.is_remote("gs://b/runs/a")
    with pytest.raises(ValueError, match="only local paths and gs://"):
        storage.path("http://example.com/run")


def test_a_local_write_is_all_or_nothing(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")
    storage.write_atomic(target, "new")
    storage.write_atomic(tmp_path / "loss.png", b"\x89PNG")
    assert target.read_text() == "new" and (tmp_path / "loss.png").read_bytes() == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "loss.png"]  # no temporary left


@pytest.mark.slow
def test_a_run_in_a_bucket_trains_resumes_and_serves_like_a_local_one(wikitext_slice, tmp_path):
    common = ["pretrain", "--preset", "d2l-tiny", "--data", str(wikitext_slice)] + \
        [a for setting in TINY for a in ("--set", setting)]
    remote, local = f"gs://{BUCKET}/runs/tiny", tmp_path / "tiny"
    with serve(BUCKET) as env:
        env = {**os.environ, **env}

        def jaxbert(*args, code=0):
            done = subprocess.run([sys.executable, "-m", "jaxbert.cli", *map(str, args)], env=env,
                                  capture_output=True, text=True)
            assert done.returncode == code, done.stderr[-3000:]
            return done

        jaxbert(*common, "--out", remote, "--set", "train.steps=4")
        jaxbert(*common, "--out", remote, "--set", "train.steps=8", "--resume")
        refused = jaxbert(*common, "--out", remote, "--set", "train.steps=8", code=2)
        assert "already holds a run" in refused.stderr
        jaxbert(*common, "--out", local, "--set", "train.steps=8")

        url = env["STORAGE_EMULATOR_HOST"]  # the bucket read over GCS's JSON API, not through jaxbert's code

        def cat(name):
            with urllib.request.urlopen(f"{url}/download/storage/v1/b/{BUCKET}/o/"
                                        f"{urllib.parse.quote(name, safe='')}?alt=media") as r:
                return r.read()
        with urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}/o?prefix=runs/tiny/") as r:
            names = [item["name"].removeprefix("runs/tiny/") for item in json.load(r)["items"]]
        assert {"config.json", "tokenizer.json", "data.json", "metrics.jsonl", "loss.png"} <= set(names), names
        assert "checkpoints/8/commit_success.txt" in names, names  # how orbax marks a finished step in a bucket
        assert any(n.startswith("tensorboard/") and "tfevents" in n for n in names), names
        assert cat("runs/tiny/loss.png")[:4] == b"\x89PNG"

        def rows(text):  # everything but the measured speed
            return [{k: v for k, v in json.loads(line).items() if k != "pairs_per_sec"} for line in text.splitlines()]
        assert rows(cat("runs/tiny/metrics.jsonl").decode()) == rows((local / "metrics.jsonl").read_text())
        assert len(rows((local / "metrics.jsonl").read_text())) >= 4

        vectors = [jaxbert("encode", run, "--pair", "a crane driver came", "he just left").stdout for run in (remote, local)]
        assert vectors[0] == vectors[1] and len(vectors[0].splitlines()) >= 10
        for run, out in ((remote, tmp_path / "hf-remote"), (local, tmp_path / "hf-local")):
            jaxbert("export", run, out)
        assert (tmp_path / "hf-remote" / "model.safetensors").read_bytes() == \
            (tmp_path / "hf-local" / "model.safetensors").read_bytes()
