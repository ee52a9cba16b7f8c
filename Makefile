# The README's commands. Everything is idempotent; `make run` and `make test` set up first.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
CTEST_FLAGS ?=

.PHONY: deps configure build cuda-build test run prometheus clean format format-check

NVCC ?= /usr/local/cuda/bin/nvcc
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
	    gka_kernels_cuda cuda_parity_test cuda_stride_test cuda_kernels_bench gpu_golden_test gka \
	    $$(ninja -C $(CUDA_BUILD) -t targets all 2>/dev/null | \
	       grep -oE '^(nccl_communicator_test|tp_gpu_test|tp_throughput_bench):' | tr -d :); \
	else echo "cuda-build: $(NVCC) not found, skipping the CUDA targets"; fi

# Tests: unit, golden, integration (real processes on 127.0.0.1); the GPU tests run from the
# CUDA build and skip without a GPU.
# The test build compiles the fault-injection hooks in (corrupt/delay/freeze a transfer on
# request); release builds (make run, the container) leave them out.
test: CMAKE_FLAGS += -DGKA_FAULT_INJECTION=ON
# The GPU suite runs only where a GPU answers (elsewhere its targets are compiled, and the main
# suite's GPU cases report ctest's skip code). The main suite runs last so its summary is the
# last thing CI prints.
test: build cuda-build
	@if [ -d $(CUDA_BUILD) ] && nvidia-smi -L >/dev/null 2>&1; then \
	  ./scripts/timed.sh gpu-test ctest --test-dir $(CUDA_BUILD) --output-on-failure -L gpu $(CTEST_FLAGS); \
	else echo "== stage gpu-test: no GPU here; CUDA targets compiled, GPU cases skip"; fi
	@./scripts/timed.sh test ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) $(CTEST_FLAGS)

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
