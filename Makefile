# The README's commands. Everything is idempotent; `make run` and `make test` set up first.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
CTEST_FLAGS ?=

.PHONY: deps configure build test run clean format format-check

deps:
	@./scripts/timed.sh deps ./scripts/deps.sh

configure: deps
	@./scripts/timed.sh configure cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

build: configure
	@./scripts/timed.sh build cmake --build $(BUILD) -j $(JOBS)

# Tests: unit, golden, integration (real processes on 127.0.0.1). GPU tests skip without a GPU.
test: build
	@./scripts/timed.sh test ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) $(CTEST_FLAGS)

# The main job: a local cluster on the embedded tiny model answering one chat request.
run: build
	@./scripts/timed.sh run ./scripts/run_local.sh $(BUILD)

format:
	@git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format -i

format-check:
	@git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format --dry-run --Werror

clean:
	rm -rf $(BUILD)
