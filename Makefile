# AudSemThinker — `make help` lists the targets. Every target creates .venv when it is missing.
#   make pipeline   build data -> SFT -> GRPO -> evaluate -> report, on the tiny default model
#   make test       the test suite (what CI runs)
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Extra Hydra overrides for the training targets, e.g. make sft ARGS="experiment=sft_semantic"
ARGS ?=
ACCEL ?= configs/accelerate/single_gpu.yaml

.PHONY: help install test test-fast test-scale test-long lint pipeline build-data sft grpo eval reproduce bench gpu-wheels clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# No CUDA here: take the CPU torch wheel first, or pip pulls a multi-GB CUDA build.
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/python -m pip install -q torch==2.13.0; fi
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with dev extras

test: $(STAMP)  ## run the test suite (excludes GPU tests)
	$(BIN)/python -m pytest

test-fast: $(STAMP)  ## unit tests only (skips the multi-minute learning/launch tests)
	$(BIN)/python -m pytest -m "not slow and not gpu"

test-scale: $(STAMP)  ## only the FSDP2 / submitit sweep / two-node launches on CPU ranks (~2.5 min)
	$(BIN)/python -m pytest -m scale

test-long: $(STAMP)  ## learning runs beyond the paper's path (full-FT and semantic-coverage GRPO; not in CI)
	$(BIN)/python -m pytest -m long

lint: $(STAMP)  ## ruff
	$(BIN)/python -m ruff check audsemthinker scripts tests bench

pipeline: $(STAMP)  ## the main job end to end on the tiny default: data, SFT, GRPO, eval, report
	$(BIN)/python scripts/pipeline.py $(ARGS)

build-data: $(STAMP)  ## build the configured dataset (data=...)
	$(BIN)/python scripts/build_data.py $(ARGS)

sft: $(STAMP)  ## SFT under accelerate (ACCEL=config, ARGS=hydra overrides)
	$(BIN)/accelerate launch --config_file $(ACCEL) scripts/sft.py $(ARGS)

grpo: $(STAMP)  ## GRPO under accelerate (ACCEL=config, ARGS=hydra overrides)
	$(BIN)/accelerate launch --config_file $(ACCEL) scripts/grpo.py $(ARGS)

eval: $(STAMP)  ## evaluate a model on the configured benchmarks
	$(BIN)/python scripts/eval.py $(ARGS)

reproduce: $(STAMP)  ## paper tables from result files
	$(BIN)/python scripts/reproduce.py $(ARGS)

bench: $(STAMP)  ## benchmarks against the stock path: data pipeline; SFT, rollout, GRPO phases; whole trainer steps (7B shape on CUDA, CPU size otherwise)
	$(BIN)/python bench/data_pipeline.py
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/grpo_step.py

# A bare GPU box (no network) has torch/transformers/peft but an older transformers and no trl:
# these pure-Python wheels give bench/train_speed.py the pinned versions there (see README, Speed).
# trl's kernel imports datasets (and it dill and multiprocess) in its backward pass.
gpu-wheels: $(STAMP)  ## download the wheels the GPU bench carries (.whl/): transformers, trl, datasets
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux2014_x86_64 -d .whl \
		$$($(BIN)/python -c "from importlib.metadata import version as v; print(' '.join(\
		f'{p}=={v(p)}' for p in ('transformers', 'trl', 'datasets', 'dill', 'multiprocess')))")

clean:  ## remove run outputs (keeps .venv)
	rm -rf outputs multirun .cache
