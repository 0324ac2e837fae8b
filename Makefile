# Each target builds its own virtual environment (.venv) from pyproject.toml on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# WikiText-2: $JAXBERT_DATA, else ../shared/data if present, else jaxbert downloads it once into ~/.cache/jaxbert.
DATA ?= $(or $(JAXBERT_DATA),$(wildcard ../shared/data/wikitext-2))
RUN ?= runs/d2l-tiny

.PHONY: demo test test-slow bench quality transfer-report clean

# What jaxbert needs at run time; the test install adds PyTorch, transformers and the peers the tests compare with.
$(BIN)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(BIN)/.installed: $(BIN)/.runtime
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps d2l==1.0.3 keras-hub==0.32.0
	touch $@

# About 10 minutes on 2 CPU cores, the install included (docs/pretraining.md, "The demo"): the book's run (its 140
# steps and its printed line), the same model trained by the fast recipe for 5 minutes, then what that model fills
# in and the book's two encodings. The demo's run directories are replaced on every `make demo`.
demo: $(BIN)/.runtime
	@echo "== 1 of 3: the book's run, d2l-tiny on WikiText-2 (about 4 minutes)"
	$(BIN)/jaxbert pretrain --preset d2l-tiny $(if $(DATA),--data $(DATA)) --out $(RUN) --overwrite
	@echo "== 2 of 3: the same model, the fast CPU recipe (d2l-tiny-fast), 5 minutes"
	$(BIN)/jaxbert pretrain --preset d2l-tiny-fast $(if $(DATA),--data $(DATA)) --out $(RUN)-fast --overwrite --budget 5m
	@echo "== 3 of 3: what it learned"
	$(BIN)/jaxbert fill-mask $(RUN)-fast "he was one of <mask> best players in the league ." --top-k 3
	$(BIN)/jaxbert encode $(RUN)-fast "a crane is flying" --brief
	$(BIN)/jaxbert encode $(RUN)-fast --pair "a crane driver came" "he just left" --brief

# The quick suite (under 10 minutes on 2 cores); test-slow runs the tests marked slow (several processes,
# kill -9, bert-base, long runs). CI runs both.
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m slow

# Benchmarks need the shared data folder (SHARED, default ../shared/data) and GNU time (/usr/bin/time); the peers
# (PyTorch, transformers, d2l 1.0.3, keras-hub) come with the test install above. docs/benchmarks.md lists the
# scripts; docs/performance.md and docs/benchmarks.md record what they print.
SHARED ?= ../shared/data
bench: $(BIN)/.installed
	cd benchmarks && ../$(BIN)/python peers.py --data ../$(SHARED)/wikitext-2
	cd benchmarks && ../$(BIN)/python w1_profile.py --data ../$(SHARED)/wikitext-2
	cd benchmarks && ../$(BIN)/python encode_speed.py --data ../$(SHARED)/wikitext-2 --vocab ../$(SHARED)/bert-base-uncased
	cd benchmarks && ../$(BIN)/python base_train.py --data ../$(SHARED)/wikitext-2 --vocab ../$(SHARED)/bert-base-uncased
	cd benchmarks && ../$(BIN)/python prepare_vs_d2l.py --data ../$(SHARED)/wikitext-2
	cd benchmarks && ../$(BIN)/python prepare_scale.py --data ../$(SHARED)
	cd benchmarks && ../$(BIN)/python preset_speed.py --data ../$(SHARED)/wikitext-2 --vocab ../$(SHARED)/bert-base-uncased
	cd benchmarks && ../$(BIN)/python growth.py --data ../$(SHARED)/wikitext-2

# The 10-minute model against the book's loop (docs/performance.md, about 45 minutes on 2 cores): d2l-tiny-fast
# with --budget 10m, then the book's PyTorch loop scored at 10 and 30 minutes, all on the same wiki.test pairs.
quality: $(BIN)/.installed
	$(BIN)/jaxbert pretrain --preset d2l-tiny-fast --data $(SHARED)/wikitext-2 --out runs/d2l-tiny-fast-10m --overwrite --budget 10m
	cd benchmarks && ../$(BIN)/python pretrain_quality.py --data ../$(SHARED)/wikitext-2 ../runs/d2l-tiny-fast-10m
	cd benchmarks && ../$(BIN)/python book_loop_quality.py --data ../$(SHARED)/wikitext-2 --minutes 10 30

# The few-labels report of docs/transfer.md, from nothing: an 8,192-piece vocabulary and a 30-minute bert-tiny-cpu
# run on IMDb's unlabelled and training reviews, then IMDb test (100 and 500 labels) and SST-2 dev (500 labels),
# each against random init and TF-IDF + logistic regression, 5 seeds. Reports land in $(REPORT)/transfer-*/.
REPORT ?= runs/imdb-report
IMDB ?= $(SHARED)/imdb/aclImdb.tar.gz
transfer-report: $(BIN)/.installed
	$(BIN)/jaxbert tokenizer train --corpus $(IMDB) --vocab-size 8192 --out $(REPORT)/tok
	$(BIN)/jaxbert prepare --corpus $(IMDB) --tokenizer $(REPORT)/tok --out $(REPORT)/prep
	$(BIN)/jaxbert pretrain --preset bert-tiny-cpu --data $(REPORT)/prep --out $(REPORT)/run --budget 30m
	$(BIN)/jaxbert transfer $(REPORT)/run --task imdb --data $(IMDB) --labels 100 500 --seeds 5
	$(BIN)/jaxbert transfer $(REPORT)/run --task sst2 --data $(SHARED)/glue/SST-2 --labels 500 --seeds 5 --max-len 64

clean:
	rm -rf $(VENV) runs .cache
