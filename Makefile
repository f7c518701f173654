# t2v-trt: every target is a thin call of the `t2vtrt` CLI; file targets make rebuilds incremental.
#   make engines [MODEL=shapes|tiny|bench|/path/to/diffusers-dir] [GPU=auto|cpu|rtx3060|...] [INT8=0]
#   make test | compare | bench | nightly | gpu-check
SHELL := /bin/bash
.DELETE_ON_ERROR:

MODEL ?= shapes
GPU ?= auto
PYTHON ?= python3
VENV ?= .venv
ARTIFACTS ?= artifacts
PROMPT ?= a red circle moving left on a dark background
PYTEST_ARGS ?=
# INT8=1: calibrate + quantize the denoiser before building engines (docs/architecture.md#precision); INT8=0 skips both.
INT8 ?= 1
# PLAN=path/to/precision_plan.json: a hand-edited FP16 fallback plan instead of the sensitivity sweep.
PLAN ?=
COMPARE_ARGS ?=
NIGHTLY_ARGS ?=

BIN := $(VENV)/bin
T2V := $(BIN)/t2vtrt $(if $(QUIET),--quiet)
STAMP := $(VENV)/.installed
# A local model directory's artifacts live under its resolved basename (build/models.py artifact_name; tests/test_makefile.py).
MODEL_NAME := $(if $(wildcard $(MODEL)/.),$(notdir $(realpath $(MODEL))),$(MODEL))
ART := $(ARTIFACTS)/$(MODEL_NAME)
MODEL_FILES := $(if $(wildcard $(MODEL)/.),$(shell find $(MODEL) -type f -not -name '.*' 2>/dev/null))

.PHONY: all setup engines calibrate test test-fast compare bench nightly gpu-check realsize-model realsize capi clean distclean help serve serve-setup serve-load
all: engines

help:
	@echo "make engines   build the embedded default model end to end (MODEL=, GPU=)"
	@echo "make test      the test suite (CPU)"
	@echo "make calibrate INT8 calibration + quantized denoiser graphs only (PLAN=)"
	@echo "make compare   polygraphy accuracy comparison of every built variant (reports/accuracy.md)"
	@echo "make bench     side-by-side runtime vs diffusers benchmark on the bench model"
	@echo "make nightly   rebuild from scratch, compare, gate, promote to latest"
	@echo "make gpu-check on an NVIDIA machine: build, compare and run TensorRT engines"
	@echo "make capi      libt2vtrt (C ABI include/t2vtrt.h) + examples into $(CAPI_BUILD)/ (docs/embedding.md)"
	@echo "make realsize-model  a random-weight zeroscope_v2_576w-size model (1.41B UNet3D) in REALSIZE_DIR"
	@echo "make realsize  every stage on it, timed with peak RSS, + rtx3060/4060/4090 dry-run plans (REALSIZE_ARGS=--no-int8)"
	@echo "make serve     tritonserver on loopback over the model's Triton repository (docs/serving.md; SERVE_ARGS=)"
	@echo "make serve-load  throughput and p50/p95 latency on Triton vs Pipeline, 1-8 clients (LOAD_ARGS=)"

# --- setup: a venv with the CPU torch from this disk, every later install under constraints.txt
# A venv that `make gpu-check` moved to onnxruntime-gpu keeps it: the CPU onnxruntime would overwrite its files.
comma := ,
GPU_VENV := $(wildcard $(VENV)/.installed-gpu $(VENV)/.installed-gpu-cu13)
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[build-tools,dev$(if $(GPU_VENV),,$(comma)cpu)]'
	$(BIN)/pip check
	touch $@
setup: $(STAMP)

# --- stages (docs/architecture.md#stages)
EXPORT_SRC := $(wildcard build/export.py build/models.py build/clip_tokenizer.py build/families/*.py)
# Passes only the engines stage applies (registry.TARGET_PIPELINES): editing one rebuilds the target's files,
# not the shared graphs and the calibration behind them (tests/test_makefile.py keeps this list honest).
TARGET_PASS_SRC := build/surgery/transposes.py build/surgery/qdq_shapes.py build/surgery/qdq_matmul.py \
	build/surgery/attention.py build/surgery/instance_norm.py
SURGERY_SRC := $(filter-out $(TARGET_PASS_SRC),$(wildcard build/surgery/*.py))
ENGINES_SRC := $(wildcard build/engines/*.py build/gpus/*.py build/gpus/*.toml) build/provenance.py $(TARGET_PASS_SRC)
CALIB_SRC := $(wildcard calibration/*.py calibration/*.json calibration/*.txt)

$(ART)/onnx/export.json: $(STAMP) $(EXPORT_SRC) $(MODEL_FILES)
	$(T2V) export --model $(MODEL) --artifacts $(ARTIFACTS)

$(ART)/onnx/surgery.json: $(ART)/onnx/export.json $(SURGERY_SRC)
	$(T2V) surgery --model $(MODEL_NAME) --artifacts $(ARTIFACTS)

# GPU=auto resolves to the detected GPU's profile, or cpu when there is no NVIDIA GPU.
TARGET := $(if $(filter auto,$(GPU)),$(shell command -v nvidia-smi >/dev/null 2>&1 && $(BIN)/t2vtrt gpus --resolve auto 2>/dev/null || echo cpu),$(GPU))
# The quantized denoisers (INT8=1), or whatever a previous calibrate left (INT8=0).
CALIB_OUT := $(if $(filter 1,$(INT8)),$(ART)/onnx/denoiser.int8-u8s8.onnx,$(wildcard $(ART)/onnx/denoiser.int8*.onnx))

$(ART)/calib/precision_plan.json: $(ART)/onnx/surgery.json $(CALIB_SRC) $(PLAN)
	$(T2V) calibrate --model $(MODEL_NAME) --artifacts $(ARTIFACTS) $(if $(PLAN),--plan $(PLAN))

# quantize writes denoiser.int8{,-cpuverify,-u8s8}.onnx together, after its accuracy gate passes.
$(ART)/onnx/denoiser.int8-u8s8.onnx: $(ART)/calib/precision_plan.json
	$(T2V) quantize --model $(MODEL_NAME) --artifacts $(ARTIFACTS)

calibrate: $(ART)/onnx/denoiser.int8-u8s8.onnx

$(ART)/engines/$(TARGET)/manifest.json: $(ART)/onnx/surgery.json $(ENGINES_SRC) $(CALIB_OUT)
	$(T2V) engines --model $(MODEL_NAME) --artifacts $(ARTIFACTS) --gpu $(TARGET)

$(ART)/samples/sample.mp4: $(ART)/engines/$(TARGET)/manifest.json
	$(T2V) generate "$(PROMPT)" --engines $(ART)/engines/$(TARGET) -o $@

engines: $(ART)/samples/sample.mp4
	@$(T2V) summary --model $(MODEL_NAME) --artifacts $(ARTIFACTS)
	@echo "engines: $(ART)/engines/$(TARGET)   sample video: $(ART)/samples/sample.mp4"

# --- the C ABI (docs/embedding.md): libt2vtrt + examples, out of source in $(CAPI_BUILD) (not build/: a Python package)
CAPI_BUILD ?= build-capi
CAPI_ARGS ?=
capi: $(STAMP)
	cmake -S capi -B $(CAPI_BUILD) $(if $(shell command -v ninja),-G Ninja) -DCMAKE_BUILD_TYPE=Release \
		-DPython3_EXECUTABLE=$(abspath $(BIN)/python) $(CAPI_ARGS)
	cmake --build $(CAPI_BUILD)

# --- serving on Triton Inference Server (docs/serving.md). tritonclient is the `serve` extra; tritonserver (2.51, with
# the Python backend and the response cache) is unpacked from the nvidia-pytriton wheel into $(TRITON_DIR)/server, not
# installed (the wheel requires numpy<2). The backend stub's Python env is $(TRITON_DIR)/env with numpy<2: the stub's
# pybind11 predates numpy 2 and garbles tensors under it.
SERVE_STAMP := $(VENV)/.installed-serve
TRITON_DIR := $(VENV)/triton
TRITON_REPO := $(ART)/triton
TRITON_SRC := $(wildcard build/triton/*.py build/triton/templates/*.py)
SERVE_ARGS ?=
LOAD_ARGS ?=
$(SERVE_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[serve]'
	rm -rf $(TRITON_DIR)/server
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt --target $(TRITON_DIR)/server nvidia-pytriton
	cp $(TRITON_DIR)/server/pytriton/tritonserver/python_backend_stubs/$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')/triton_python_backend_stub \
		$(TRITON_DIR)/server/pytriton/tritonserver/backends/python/
	test -x $(TRITON_DIR)/env/bin/python || $(BIN)/python -m venv $(TRITON_DIR)/env
	$(TRITON_DIR)/env/bin/pip install --quiet --disable-pip-version-check -c constraints.txt 'numpy<2' -e '.[cpu]'
	$(BIN)/pip check
	touch $@
serve-setup: $(SERVE_STAMP)

$(TRITON_REPO)/$(MODEL_NAME)/config.pbtxt: $(ART)/engines/$(TARGET)/manifest.json $(TRITON_SRC) $(SERVE_STAMP)
	$(T2V) triton-repo --engines $(ART)/engines/$(TARGET) -o $(TRITON_REPO)

serve: $(TRITON_REPO)/$(MODEL_NAME)/config.pbtxt
	$(T2V) triton-serve --repo $(TRITON_REPO) $(SERVE_ARGS)

serve-load: $(SERVE_STAMP) $(ART)/engines/$(TARGET)/manifest.json
	$(BIN)/python -m t2vtrt.build.triton.load --engines $(ART)/engines/$(TARGET) --out $(ART)/reports $(LOAD_ARGS)

# --- checks
test: $(STAMP) $(SERVE_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) $(SERVE_STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

compare: $(ART)/engines/$(TARGET)/manifest.json
	$(T2V) compare --model $(MODEL_NAME) --artifacts $(ARTIFACTS) --gpu $(TARGET) $(COMPARE_ARGS)

# The bench model through the same make stages (INT8 calibration included and timed), then both sides.
BENCH_MODEL ?= bench
bench: $(STAMP)
	$(MAKE) --no-print-directory engines MODEL=$(BENCH_MODEL) GPU=cpu
	$(BIN)/python -m t2vtrt.build.bench.run --model $(BENCH_MODEL) --artifacts $(ARTIFACTS)

nightly: $(STAMP)
	$(T2V) nightly --model $(MODEL) --artifacts $(ARTIFACTS) --gpu $(TARGET) $(NIGHTLY_ARGS)

# TensorRT, cuda-python, NVML and onnxruntime-gpu (in place of the CPU onnxruntime: they share one package folder) on
# top of the build venv (same constraints); never part of `make test`.
# GPU_EXTRA=gpu: CUDA 12 (driver r535+); GPU_EXTRA=gpu-cu13: CUDA 13 (driver r580+).
GPU_EXTRA ?= gpu
$(VENV)/.installed-$(GPU_EXTRA): $(STAMP)
	$(BIN)/pip uninstall --quiet --yes onnxruntime onnxruntime-gpu
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[build-tools,dev,$(GPU_EXTRA)]' \
		|| { echo "gpu-check: FAIL at step 'install' (pip install -e '.[build-tools,dev,$(GPU_EXTRA)]')"; exit 1; }
	$(BIN)/pip check || { echo "gpu-check: FAIL at step 'install' (pip check)"; exit 1; }
	touch $@

gpu-check: $(VENV)/.installed-$(GPU_EXTRA)
	$(T2V) gpu-check --model $(MODEL) --artifacts $(ARTIFACTS)

# A random-weight model at zeroscope_v2_576w's real sizes (UNet3D 1.41B, CLIP-H-size text, SD VAE; 7 GB), made by
# code: then `make engines MODEL=$(REALSIZE_DIR) GPU=rtx3060` (export needs about 12 GB of RAM).
REALSIZE_DIR ?= $(ARTIFACTS)/models/zeroscope-realsize
$(REALSIZE_DIR)/model_index.json: $(STAMP) build/realsize.py
	$(T2V) make-realsize-model --out $(REALSIZE_DIR)

realsize-model: $(REALSIZE_DIR)/model_index.json

# Not part of `make test`: hours of CPU and ~16 GB of RAM (docs/benchmarks.md has its figures and host).
REALSIZE_ARGS ?=
realsize: $(REALSIZE_DIR)/model_index.json
	$(T2V) realsize --model $(REALSIZE_DIR) --artifacts $(ARTIFACTS) $(REALSIZE_ARGS)

clean:
	rm -rf $(ART)

distclean:
	rm -rf $(ARTIFACTS) $(VENV) *.egg-info
