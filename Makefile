# finetune.h - build, test, benchmark.  `make test` and `make demo` are the README's two commands.
CC      ?= cc
CFLAGS  ?= -O2 -march=native -g
WARN     = -std=c99 -Wall -Wextra -Wpedantic
LDLIBS   = -lm -lpthread
BUILD   ?= build
PYTHON  ?= python3
SAN      = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

TEST_SRC = $(wildcard tests/test_*.c)
TESTS    = $(patsubst tests/%.c,$(BUILD)/%,$(TEST_SRC)) $(BUILD)/test_kernels_ref $(BUILD)/test_grad_ref
ARCH    := $(shell uname -m)
ifeq ($(ARCH),x86_64)
TESTS   += $(BUILD)/test_kernels_avx2
endif

.PHONY: all test demo sanitize san-build bench bench-train examples clean
EXAMPLES = $(patsubst examples/%.c,$(BUILD)/%,$(wildcard examples/*.c))
all: $(BUILD)/ft $(TESTS) $(BUILD)/bench $(EXAMPLES)
examples: $(EXAMPLES)

$(BUILD)/%: examples/%.c finetune.h | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -I. -o $@ $< $(LDLIBS)

$(BUILD):
	mkdir -p $(BUILD)

$(BUILD)/test_%: tests/test_%.c finetune.h tests/ft_test.h | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -o $@ $< $(LDLIBS)

# the same tests on the scalar reference kernels, and on AVX2 where the machine has more
$(BUILD)/test_kernels_ref: tests/test_kernels.c finetune.h tests/ft_test.h | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -DFT_NO_SIMD -o $@ $< $(LDLIBS)
$(BUILD)/test_grad_ref: tests/test_grad.c finetune.h tests/ft_test.h | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -DFT_NO_SIMD -o $@ $< $(LDLIBS)
$(BUILD)/test_kernels_avx2: tests/test_kernels.c finetune.h tests/ft_test.h | $(BUILD)
	$(CC) $(WARN) -O2 -g -mavx2 -mfma -mf16c -o $@ $< $(LDLIBS)

$(BUILD)/ft: tools/ft.c finetune.h | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -o $@ $< $(LDLIBS)

$(BUILD)/bench: tools/bench.c finetune.h | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -o $@ $< $(LDLIBS) -ldl

# the real model (SmolLM2-135M-Instruct) comes from tools/fetch-model, cached after the first time
MODEL = FT_MODEL=$$(tools/fetch-model || echo missing-model) && export FT_MODEL &&

test: $(BUILD)/ft $(TESTS) $(EXAMPLES)
	@$(MODEL) sh tests/run.sh $(BUILD)

# the main job: a short QLoRA fine-tune of SmolLM2-135M-Instruct on a skill it lacks (rewriting
# ISO dates as DD.MM.YYYY), with the held-out evaluation before and after; a few minutes on 2 cores
demo: $(BUILD)/ft
	@$(MODEL) $(BUILD)/ft train -m "$$FT_MODEL" --method qlora --objective sft \
	    --data examples/data/dates_train.jsonl --eval examples/data/dates_eval.jsonl \
	    --steps 40 --batch 8 --lr 1e-3 --rank 8 --alpha 16 --eval-gen 50 --max-new 12 --out runs/demo

sanitize:
	$(MAKE) --no-print-directory BUILD=build/san CFLAGS="$(SAN)" san-build
	@$(MODEL) ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 sh tests/run.sh build/san --no-compile
# the runs on SmolLM2's 49k vocabulary (pref, resume, llamacpp) take minutes under ASan: make test runs them
SAN_SKIP = tests/test_pref.c tests/test_resume.c tests/test_llamacpp.c
san-build: $(patsubst tests/%.c,$(BUILD)/%,$(filter-out $(SAN_SKIP),$(TEST_SRC))) $(BUILD)/test_kernels_ref

# GEMM vs the FMA peak and OpenBLAS; the model's pp/tg speed vs llama.cpp (llama-cpp-python) when importable
bench: $(BUILD)/bench
	@$(MODEL) env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BUILD)/bench
	@$(MODEL) if $(PYTHON) -c "import llama_cpp" 2>/dev/null; then $(PYTHON) tools/bench_llamacpp.py "$$FT_MODEL" $$(nproc); \
	  else echo "(pip install llama-cpp-python to compare with llama.cpp)"; fi

# LoRA / QLoRA training steps of SmolLM2-135M, ours beside PyTorch + peft (PYTHON with torch, transformers,
# peft, gguf, bitsandbytes), each configuration in its own process, interleaved; BENCH_THREADS=1,2
BENCH_THREADS ?= 1,2
BENCH_ARGS    ?=
bench-train: $(BUILD)/bench
	@$(MODEL) $(PYTHON) tools/bench_torch.py compare -m "$$FT_MODEL" --bench $(BUILD)/bench --threads $(BENCH_THREADS) \
	    --jsonl $(BUILD)/bench_train.jsonl $(BENCH_ARGS)

clean:
	rm -rf build
