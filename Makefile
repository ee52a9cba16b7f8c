# The README's commands. Everything is idempotent; `make run` and `make test` set up first.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
CTEST_FLAGS ?=

.PHONY: deps configure build cuda-build test run prometheus clean format format-check \
	san-configure asan-test fuzz sanitize tsan-configure tsan-test

NVCC ?= /usr/local/cuda/bin/nvcc
# 1: `make test` also runs the fuzz targets, the ASan+UBSan and the TSan tests (`sanitize` below).
SANITIZE ?= 1
CUDA_BUILD ?= build-cuda

deps:
	@./scripts/timed.sh deps ./scripts/deps.sh

configure: deps
	@./scripts/timed.sh configure cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

build: configure
	@./scripts/timed.sh build cmake --build $(BUILD) -j $(JOBS)

# The CUDA backend (sm_90a) and its GPU tests, compiled whenever nvcc exists (CI has no GPU:
# the tests then skip). Engine and kernels only: the GPU build needs no gRPC or UCX. The NCCL
# (multi-GPU tensor parallelism) targets too where the toolkit has NCCL.
cuda-build: deps
	@if [ -x $(NVCC) ]; then \
	  ./scripts/timed.sh cuda-configure cmake -S . -B $(CUDA_BUILD) -G Ninja -DGKA_WITH_CUDA=ON \
	    -DGKA_WITH_GRPC=OFF -DCMAKE_BUILD_TYPE=Release && \
	  ./scripts/timed.sh cuda-build cmake --build $(CUDA_BUILD) -j $(JOBS) --target \
	    gka_kernels_cuda cuda_parity_test cuda_stride_test cuda_kernels_bench decode_gemm_bench \
	    gpu_golden_test gka \
	    $$(ninja -C $(CUDA_BUILD) -t targets all 2>/dev/null | \
	       grep -oE '^(nccl_communicator_test|one_shot_all_reduce_test|tp_gpu_test|tp_throughput_bench|all_reduce_bench):' | tr -d :); \
	else echo "cuda-build: $(NVCC) not found, skipping the CUDA targets"; fi

# Tests: unit, golden, integration (real processes on 127.0.0.1); the GPU tests run from the
# CUDA build and skip without a GPU.
# The test build compiles the fault-injection hooks in (corrupt/delay/freeze a transfer on
# request); release builds (make run, the container) leave them out.
test: CMAKE_FLAGS += -DGKA_FAULT_INJECTION=ON
# The GPU suite runs only where a GPU answers (elsewhere its targets are compiled, and the main
# suite's GPU cases report ctest's skip code). The main suite runs last so its summary is the
# last thing CI prints.
test: build cuda-build $(if $(filter 1,$(SANITIZE)),sanitize)
	@if [ -d $(CUDA_BUILD) ] && nvidia-smi -L >/dev/null 2>&1; then \
	  ./scripts/timed.sh gpu-test ctest --test-dir $(CUDA_BUILD) --output-on-failure -L gpu $(CTEST_FLAGS); \
	else echo "== stage gpu-test: no GPU here; CUDA targets compiled, GPU cases skip"; fi
	@./scripts/timed.sh test ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) $(CTEST_FLAGS)

# Sanitizers and fuzzing: clang from Debian with its libFuzzer and sanitizer runtimes. One
# ASan+UBSan build (build-asan; every library also instrumented for libFuzzer's coverage)
# serves the fuzz targets and every unit, integration and golden test (`-L`), the servers'
# binaries included. Not under ASan, each for a reason (they run in the main suite):
#   chaos            its leases and grace periods are sized for an uninstrumented build
#   admission_cluster bounds the router's RSS growth under overload; ASan's quarantine keeps
#                    freed memory resident on purpose, so the bound measures ASan, not us
#   sdk_cpp_install_test compiles an outside project against the installed SDK, which in this
#                    tree is instrumented; the outside project is not
# Debian's gRPC, Protobuf, Abseil and UCX are not instrumented: ASan sees their allocations
# through its malloc interceptors, and UCX must not patch malloc under ASan (UCX_MEM_*).
# `make test` runs `fuzz`, `asan-test` and `tsan-test` (SANITIZE=0: none; ASAN_TESTS=0: no
# asan-test; TSAN_TESTS=0: no tsan-test).
SAN_BUILD ?= build-asan
FUZZ_SECONDS ?= 30
SAN_CXX_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=undefined -fsanitize=fuzzer-no-link
FUZZ_TARGETS := safetensors_fuzz config_fuzz tokenizer_fuzz request_fuzz openai_fuzz ticket_fuzz
SAN_LABELS := unit|integration|golden
SAN_EXCLUDE := ^(admission_cluster|sdk_cpp_install_test)$$|_NOT_BUILT
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/asan/lsan_suppressions.txt \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 UCX_MEM_MALLOC_HOOKS=no \
	UCX_MEM_MMAP_HOOK_MODE=none UCX_MEM_EVENTS=no

san-configure: deps
	@./scripts/timed.sh asan-configure env CC=clang CXX=clang++ cmake -S . -B $(SAN_BUILD) -G Ninja \
	  -DGKA_BUILD_FUZZERS=ON -DGKA_FAULT_INJECTION=ON -DGKA_BUILD_BENCHMARKS=OFF \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS=$(SAN_CXX_FLAGS)" >/dev/null

# Each fuzz target replays its corpus (the regressions) and then runs FUZZ_SECONDS.
fuzz: san-configure
	@./scripts/timed.sh fuzz-build cmake --build $(SAN_BUILD) -j $(JOBS) --target $(FUZZ_TARGETS)
	@./scripts/timed.sh fuzz ./tests/fuzz/run_fuzzers.sh $(SAN_BUILD) $(FUZZ_SECONDS)

asan-test: san-configure
	@./scripts/timed.sh asan-build cmake --build $(SAN_BUILD) -j $(JOBS)
	@$(SAN_ENV) ./scripts/timed.sh asan-test ctest --test-dir $(SAN_BUILD) --output-on-failure \
	  -j $(JOBS) -L '$(SAN_LABELS)' -E '$(SAN_EXCLUDE)' $(CTEST_FLAGS)

# ThreadSanitizer (clang, build-tsan): the in-process tests of the scheduler, transfer (with
# real UCX transfers between two processes), rpc, router and workers (real gRPC servers and
# UCX in one process). Debian's Abseil is uninstrumented, so every target of this build links
# tests/tsan/absl_annotations.cc, which gives absl::Mutex, CondVar and Notification the TSan
# annotations of Abseil's own TSan build, and tests/tsan/grpc_annotations.cc, which states
# gRPC's own orderings (a batch's start before its completion, a callback call's reactions
# before its OnDone) at the entry points of Debian's uninstrumented gRPC; nothing is excluded.
# tests/tsan/suppressions.txt ignores only the interceptors called from inside uninstrumented
# Debian libraries (each one justified there).
# The `tsan_probe` test proves that a race in our code is still reported under those
# suppressions, and that without the annotations absl::Mutex would report false races.
TSAN_BUILD ?= build-tsan
TSAN_CXX_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
TSAN_TEST_TARGETS := tsan_probe tsan_probe_unannotated scheduler_test transfer_test \
	ucx_transfer_test rpc_test router_test router_integration_test workers_test decode_core_test
TSAN_TESTS_1 := tsan_probe|SchedulerTest|Workloads/SchedulerProperty|Descriptor|Checksum|Lease
TSAN_TESTS_2 := CompatHash|Transports/|Rpc|Admission|OutputText|RateLimits
TSAN_TESTS_3 := RequestValidation|TierTable|Wire|WorkerRegistry|Router|WorkersTest|DecodeCore
TSAN_TESTS_RE := ^($(TSAN_TESTS_1)|$(TSAN_TESTS_2)|$(TSAN_TESTS_3))
TSAN_EXCLUDE := _NOT_BUILT
TSAN_ENV := TSAN_OPTIONS=suppressions=$(CURDIR)/tests/tsan/suppressions.txt:second_deadlock_stack=1 \
	UCX_MEM_MALLOC_HOOKS=no UCX_MEM_MMAP_HOOK_MODE=none UCX_MEM_EVENTS=no

tsan-configure: deps
	@./scripts/timed.sh tsan-configure env CC=clang CXX=clang++ cmake -S . -B $(TSAN_BUILD) -G Ninja \
	  -DGKA_FAULT_INJECTION=ON -DGKA_BUILD_BENCHMARKS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  "-DCMAKE_CXX_FLAGS=$(TSAN_CXX_FLAGS)" "-DCMAKE_C_FLAGS=-fsanitize=thread" >/dev/null

tsan-test: tsan-configure
	@./scripts/timed.sh tsan-build cmake --build $(TSAN_BUILD) -j $(JOBS) --target $(TSAN_TEST_TARGETS)
	@$(TSAN_ENV) ./scripts/timed.sh tsan-test ctest --test-dir $(TSAN_BUILD) --output-on-failure \
	  -j $(JOBS) -R '$(TSAN_TESTS_RE)' -E '$(TSAN_EXCLUDE)' $(CTEST_FLAGS)

ASAN_TESTS ?= 1
TSAN_TESTS ?= 1
sanitize: fuzz $(if $(filter 1,$(ASAN_TESTS)),asan-test) $(if $(filter 1,$(TSAN_TESTS)),tsan-test)

# The main job: a local cluster on the embedded tiny model answering one chat request.
run: build
	@./scripts/timed.sh run ./scripts/run_local.sh $(BUILD)

# A local cluster scraped by a real Prometheus with the project's rules (deploy/Makefile).
prometheus: build
	@$(MAKE) -C deploy prometheus BUILD=$(abspath $(BUILD))

format:
	@git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format -i

format-check:
	@git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format --dry-run --Werror

clean:
	rm -rf $(BUILD)
