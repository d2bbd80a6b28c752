# finetune.h - build, test, benchmark.  `make test` and `make demo` are the README's two commands.
CC      ?= cc
CFLAGS  ?= -O2 -march=native -g
WARN     = -std=c99 -Wall -Wextra -Wpedantic
LDLIBS   = -lm -lpthread
BUILD   ?= build
PYTHON  ?= python3
SAN      = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
NPROC   := $(shell nproc 2>/dev/null || echo 2)
ifeq ($(MAKELEVEL),0)
MAKEFLAGS += -j$(NPROC)          # parallel by default; a -j on the command line wins
endif

# The implementation is compiled once, into $(BUILD)/finetune.o, which the tools, the examples and
# the tests link. The tests that reach into the implementation (ft__ functions) are one translation
# unit, tests/whitebox.c, built three ways. The compile matrix (tests/compile.sh) builds the
# single header in every other configuration, each once.
WHITEBOX = kernels nf4 quant tokenizer model export peft_export peft_ref grad
TEST_SRC = $(filter-out $(patsubst %,tests/test_%.c,$(WHITEBOX)),$(wildcard tests/test_*.c))
TESTS    = $(patsubst tests/%.c,$(BUILD)/%,$(TEST_SRC)) $(BUILD)/test_whitebox $(BUILD)/test_whitebox_ref $(BUILD)/test_cuda_emu
MATRIX   = gcc_c99 gcc_c99_nosimd gcc_c11 gcc_c99_nothreads gcc_c99_static gcc_c99_no_rl gcc_c99_no_synth gcc_c99_no_merge \
           clang_c99 clang_c11_static_nosimd gxx_cxx11 gxx_cxx17_static clangxx_cxx11 neon nvcc
ARCH    := $(shell uname -m)
ifeq ($(ARCH),x86_64)
TESTS   += $(BUILD)/test_whitebox_avx2
endif
EXAMPLES = $(patsubst examples/%.c,$(BUILD)/%,$(wildcard examples/*.c))
LIB      = $(BUILD)/finetune.o

.PHONY: all test demo sanitize san-build bench bench-train bench-mpi examples readme clean mpi cuda test-cuda bench-cuda ft-cuda mpi-cuda
all: $(BUILD)/ft $(TESTS) $(BUILD)/bench $(EXAMPLES)
examples: $(EXAMPLES)

$(BUILD) $(BUILD)/matrix:
	mkdir -p $@

# the implementation; its warnings are kept in finetune.o.log (the compile matrix's gcc_c99 reads it)
$(LIB): finetune.h | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -x c -DFINETUNE_IMPLEMENTATION -c -o $@ finetune.h 2> $@.log; \
	    rc=$$?; cat $@.log >&2; exit $$rc

$(BUILD)/ft: tools/ft.c $(LIB) finetune.h
	$(CC) $(WARN) $(CFLAGS) -o $@ tools/ft.c $(LIB) $(LDLIBS)

# data-parallel training over MPI (tools/ft_mpi.c): mpirun -np N build/ft-mpi train ...; built by
# make test too when mpicc is there (.ci/run installs Debian's OpenMPI), for tests/test_mpi.c
MPICC   ?= mpicc
HAVE_MPI := $(shell command -v $(MPICC) 2>/dev/null)
MPICXX  ?= mpicxx
MPI_BIN  = $(if $(HAVE_MPI),$(BUILD)/ft-mpi $(BUILD)/ft-mpi-cuda-emu)
mpi: $(BUILD)/ft-mpi
$(BUILD)/ft-mpi: tools/ft_mpi.c tools/ft.c $(LIB) finetune.h
	OMPI_CC=$(CC) $(MPICC) $(WARN) $(CFLAGS) -o $@ tools/ft_mpi.c $(LIB) $(LDLIBS)

$(BUILD)/%: examples/%.c $(LIB) finetune.h
	$(CC) $(WARN) $(CFLAGS) -I. -o $@ $< $(LIB) $(LDLIBS)

$(BUILD)/test_%: tests/test_%.c $(LIB) finetune.h tests/ft_test.h tests/tiny_model.h
	$(CC) $(WARN) $(CFLAGS) -o $@ $< $(LIB) $(LDLIBS)

WHITEBOX_DEPS = tests/whitebox.c $(patsubst %,tests/test_%.c,$(WHITEBOX)) finetune.h tests/ft_test.h tests/tiny_model.h | $(BUILD)
$(BUILD)/test_whitebox: $(WHITEBOX_DEPS)
	$(CC) $(WARN) $(CFLAGS) -o $@ tests/whitebox.c $(LDLIBS)
# the scalar reference kernels (FT_NO_SIMD); the matrix's gcc_c99_nosimd reads its warnings
$(BUILD)/test_whitebox_ref: $(WHITEBOX_DEPS)
	$(CC) $(WARN) $(CFLAGS) -DFT_NO_SIMD -o $@ tests/whitebox.c $(LDLIBS) 2> $@.log; \
	    rc=$$?; cat $@.log >&2; exit $$rc
# the AVX2 kernels on a machine that has more
$(BUILD)/test_whitebox_avx2: $(WHITEBOX_DEPS)
	$(CC) $(WARN) -O2 -g -mavx2 -mfma -mf16c -DFT_WHITEBOX_KERNELS -o $@ tests/whitebox.c $(LDLIBS)

# The GPU companion, finetune_cuda.cu (CUDA Runtime only). `make cuda`: nvcc, warnings as errors,
# for sm_80 and sm_90 plus PTX. `make test-cuda`: tests/test_cuda.cc on the GPU. `make test` runs
# the same tests on the CPU, the kernels compiled through tests/cuda_emu.h ($(BUILD)/test_cuda_emu),
# and the compile matrix's nvcc line builds and links the GPU test without running it.
NVCC      ?= nvcc
CXX       ?= g++
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
NVCCFLAGS ?= -O3 -std=c++17 -Werror all-warnings -Xcompiler -Wall,-Wextra $(CUDA_ARCH)
cuda: $(BUILD)/finetune_cuda.o
$(BUILD)/finetune_cuda.o: finetune_cuda.cu finetune.h | $(BUILD)
	$(NVCC) $(NVCCFLAGS) -I. -c -o $@ finetune_cuda.cu
$(BUILD)/gpu/test_cuda: tests/test_cuda.cc $(BUILD)/finetune_cuda.o tests/ft_test.h
	mkdir -p $(BUILD)/gpu
	$(NVCC) -O2 -std=c++17 -I. -o $@ tests/test_cuda.cc $(BUILD)/finetune_cuda.o -lpthread
test-cuda: $(BUILD)/gpu/test_cuda
	$(BUILD)/gpu/test_cuda
# GEMM and attention speed on the GPU (tools/bench_cuda.cc); tools/cuda_check.sh runs tests and this
bench-cuda: $(BUILD)/gpu/bench_cuda
	$(BUILD)/gpu/bench_cuda
$(BUILD)/gpu/bench_cuda: tools/bench_cuda.cc $(BUILD)/finetune_cuda.o
	mkdir -p $(BUILD)/gpu
	$(NVCC) -O2 -std=c++17 -I. -o $@ tools/bench_cuda.cc $(BUILD)/finetune_cuda.o -lpthread
$(BUILD)/test_cuda_emu: tests/test_cuda.cc finetune_cuda.cu tests/cuda_emu.h finetune.h tests/ft_test.h tests/tiny_model.h | $(BUILD)
	$(CXX) -std=c++17 -Wall -Wextra -Wpedantic -Werror -O1 -g -DFT_CUDA_EMU -o $@ tests/test_cuda.cc -lm -lpthread
# the command line with --device cuda: build/ft-cuda on a GPU (build/ft-mpi-cuda: over MPI, a rank per
# GPU); build/ft-cuda-emu, the same program with the kernels run on the CPU through tests/cuda_emu.h,
# for tests/test_cli.c (build/ft-mpi-cuda-emu: for tests/test_mpi.c)
ft-cuda: $(BUILD)/ft-cuda
mpi-cuda: $(BUILD)/ft-mpi-cuda
# the command line compiled once with --device cuda (ft-cuda.o, ft-mpi-cuda.o), linked with the
# kernels for a GPU (finetune_cuda.o) or emulated (cuda-emu.o)
$(BUILD)/ft-cuda.o: tools/ft.c finetune.h finetune_cuda.cu | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -DFT_WITH_CUDA -I. -c -o $@ tools/ft.c
$(BUILD)/ft-mpi-cuda.o: tools/ft_mpi.c tools/ft.c finetune.h finetune_cuda.cu | $(BUILD)
	OMPI_CC=$(CC) $(MPICC) $(WARN) $(CFLAGS) -DFT_WITH_CUDA -I. -c -o $@ tools/ft_mpi.c
$(BUILD)/cuda-emu.o: finetune_cuda.cu tests/cuda_emu.h finetune.h | $(BUILD)
	$(CXX) -std=c++17 -Wall -Wextra -Werror -O1 -DFT_CUDA_EMU -include tests/cuda_emu.h -x c++ -I. -c -o $@ finetune_cuda.cu
$(BUILD)/ft-cuda: $(BUILD)/ft-cuda.o $(LIB) $(BUILD)/finetune_cuda.o
	$(NVCC) -o $@ $(BUILD)/ft-cuda.o $(LIB) $(BUILD)/finetune_cuda.o -lm -lpthread
$(BUILD)/ft-mpi-cuda: $(BUILD)/ft-mpi-cuda.o $(LIB) $(BUILD)/finetune_cuda.o
	$(NVCC) -o $@ $(BUILD)/ft-mpi-cuda.o $(LIB) $(BUILD)/finetune_cuda.o -lm -lpthread $(shell $(MPICC) --showme:link)
$(BUILD)/ft-cuda-emu: $(BUILD)/ft-cuda.o $(LIB) $(BUILD)/cuda-emu.o
	$(CXX) -o $@ $(BUILD)/ft-cuda.o $(LIB) $(BUILD)/cuda-emu.o -lm -lpthread
$(BUILD)/ft-mpi-cuda-emu: $(BUILD)/ft-mpi-cuda.o $(LIB) $(BUILD)/cuda-emu.o
	OMPI_CXX=$(CXX) $(MPICXX) -o $@ $(BUILD)/ft-mpi-cuda.o $(LIB) $(BUILD)/cuda-emu.o -lm -lpthread

$(BUILD)/bench: tools/bench.c finetune.h | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -o $@ $< $(LDLIBS) -ldl

# one line per configuration: "ok - compile: NAME", "FAIL - ..." with the log, or "skip - ..."
$(BUILD)/matrix/%.txt: tests/compile.sh finetune.h tests/compile_main.c tests/compile_impl.c tests/whitebox.c finetune_cuda.cu tests/test_cuda.cc tools/bench_cuda.cc | $(BUILD)/matrix
	@BUILD=$(BUILD) CC=$(CC) sh tests/compile.sh $* > $@
$(BUILD)/matrix/gcc_c99.txt: $(LIB)
$(BUILD)/matrix/nvcc.txt: $(LIB)
$(BUILD)/matrix/gcc_c99_nosimd.txt: $(BUILD)/test_whitebox_ref

# the real model (SmolLM2-135M-Instruct) comes from tools/fetch-model, cached after the first time;
# the second (Gemma 3 270M) is used when `tools/fetch-model gemma3` has cached it, SmolLM2 as a
# Hugging Face directory when tools/ref/hf_smollm2.py has written it
MODEL = FT_MODEL=$$(tools/fetch-model || echo missing-model) && export FT_MODEL && \
        FT_MODEL_GEMMA3=$$(FT_NO_DOWNLOAD=1 tools/fetch-model gemma3 2>/dev/null || true) && export FT_MODEL_GEMMA3 && \
        FT_MODEL_HF=$${FT_MODEL_HF:-$$HOME/.cache/finetune/hf/SmolLM2-135M-Instruct} && export FT_MODEL_HF &&

test: $(BUILD)/ft $(BUILD)/ft-cuda-emu $(MPI_BIN) $(TESTS) $(EXAMPLES) $(patsubst %,$(BUILD)/matrix/%.txt,$(MATRIX))
	@$(MODEL) sh tests/run.sh $(BUILD)

# the main job: a short QLoRA fine-tune of SmolLM2-135M-Instruct on a skill it lacks (rewriting
# ISO dates as DD.MM.YYYY), with the held-out evaluation before and after; a few minutes on 2 cores
demo: $(BUILD)/ft
	@$(MODEL) $(BUILD)/ft train -m "$$FT_MODEL" --method qlora --objective sft \
	    --data examples/data/dates_train.jsonl --eval examples/data/dates_eval.jsonl \
	    --steps 40 --batch 8 --lr 1e-3 --rank 8 --alpha 16 --eval-gen 50 --max-new 12 --out runs/demo

# every ```sh block of README.md, run in a clean clone of this checkout with the step counts cut down
readme: $(BUILD)/ft
	@sh tests/readme.sh

sanitize:
	$(MAKE) --no-print-directory BUILD=build/san CFLAGS="$(SAN)" san-build
	@$(MODEL) ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 sh tests/run.sh build/san --no-compile
# the runs on SmolLM2's 49k vocabulary (pref, resume, llamacpp, dist, mpi) take minutes under ASan: make test runs them
SAN_SKIP = tests/test_pref.c tests/test_resume.c tests/test_llamacpp.c tests/test_dist.c tests/test_mpi.c
san-build: $(patsubst tests/%.c,$(BUILD)/%,$(filter-out $(SAN_SKIP),$(TEST_SRC))) $(BUILD)/test_whitebox $(BUILD)/test_whitebox_ref $(BUILD)/ft \
           $(EXAMPLES)

# GEMM vs the FMA peak and OpenBLAS; the model's pp/tg speed vs llama.cpp (llama-cpp-python) when importable
bench: $(BUILD)/bench
	@$(MODEL) env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BUILD)/bench
	@$(MODEL) if $(PYTHON) -c "import llama_cpp" 2>/dev/null; then $(PYTHON) tools/bench_llamacpp.py "$$FT_MODEL" $$(nproc); \
	  else echo "(pip install llama-cpp-python to compare with llama.cpp)"; fi

# LoRA / QLoRA training steps of SmolLM2-135M, ours beside PyTorch + peft (PYTHON with torch, transformers,
# peft, gguf, bitsandbytes), each configuration in its own process, interleaved; BENCH_THREADS=1,2;
# BENCH_ARGS="--methods lora,qlora,full --peers f32,bf16,bf16w" adds full fine-tuning and torch's whole-bf16 model
BENCH_THREADS ?= 1,2
BENCH_ARGS    ?=
bench-train: $(BUILD)/bench
	@$(MODEL) $(PYTHON) tools/bench_torch.py compare -m "$$FT_MODEL" --bench $(BUILD)/bench --threads $(BENCH_THREADS) \
	    --jsonl $(BUILD)/bench_train.jsonl $(BENCH_ARGS)

# data parallelism on this machine: 1 process x 2 threads vs 2 ranks x 1 thread (and ZeRO-1), the
# same global batch; full fine-tuning's peak RSS per rank with and without ZeRO-1 (tools/bench_mpi.sh)
bench-mpi: $(BUILD)/ft $(BUILD)/ft-mpi
	@$(MODEL) BUILD=$(BUILD) sh tools/bench_mpi.sh "$$FT_MODEL" $(BENCH_ROUNDS)
BENCH_ROUNDS ?= 3

clean:
	rm -rf build

# ---- fuzzing: libFuzzer harnesses of every parser of untrusted bytes (tests/fuzz/fuzz_*.c), each
# built with clang's -fsanitize=fuzzer,address,undefined. make fuzz: each for FUZZ_TIME seconds on a
# working copy of its seeds ($(BUILD)/fuzz/corpus/<target>), one line per target, non-zero on any
# finding (tests/fuzz/run.sh); make fuzz-smoke: the same for 10 s each (CI); make fuzz-seeds:
# regenerate the committed seeds tests/fuzz/corpus/ (tests/fuzz/make_seeds.c).
FUZZ_TARGETS = gguf safetensors json dataset tokenizer chat regex peft checkpoint model hf
FUZZ_CC     ?= clang
FUZZ_FLAGS   = -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_TIME   ?= 60
FUZZ_BINS    = $(patsubst %,$(BUILD)/fuzz/fuzz_%,$(FUZZ_TARGETS))
.PHONY: fuzz fuzz-smoke fuzz-build fuzz-seeds

$(BUILD)/fuzz:
	mkdir -p $@
$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h tests/tiny_model.h finetune.h | $(BUILD)/fuzz
	$(FUZZ_CC) $(WARN) $(FUZZ_FLAGS) -o $@ $< $(LDLIBS)
$(BUILD)/fuzz/make_seeds: tests/fuzz/make_seeds.c tests/fuzz/fuzz_common.h tests/tiny_model.h finetune.h | $(BUILD)/fuzz
	$(CC) $(WARN) -O1 -g -o $@ $< $(LDLIBS)

fuzz-build: $(FUZZ_BINS)
fuzz: $(FUZZ_BINS)
	@BUILD=$(BUILD) FUZZ_TIME=$(FUZZ_TIME) sh tests/fuzz/run.sh $(FUZZ_TARGETS)
fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_TIME=10
fuzz-seeds: $(BUILD)/fuzz/make_seeds
	rm -rf tests/fuzz/corpus
	$(BUILD)/fuzz/make_seeds tests/fuzz/corpus
