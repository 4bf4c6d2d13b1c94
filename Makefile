# owl — build, test and run. `make run` and `make test` do all set-up on a
# fresh Debian 12 machine (packages through apt, Go modules through the proxy).

GO      ?= go
CC      ?= cc
MARCH   ?= native
# The machine the C compiler builds for (x86_64, aarch64, ...).
TARGET_CPU := $(firstword $(subst -, ,$(shell $(CC) -dumpmachine 2>/dev/null)))
# AMX tiles need kernels the cgo build of ggml does not compile; keep them
# off (x86 only: gcc for arm64 knows no such flags).
NOAMX   := $(if $(filter x86_64 i686,$(TARGET_CPU)),$(if $(filter native sapphirerapids graniterapids,$(MARCH)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16))
OPT     ?= -O3 -march=$(MARCH) $(NOAMX)
BUILD   := $(CURDIR)/build
BIN     := $(CURDIR)/bin

# Debian packages the build and the tests need.
DEB_PACKAGES := g++ pkg-config nlohmann-json3-dev libstb-dev portaudio19-dev libespeak-ng-dev \
	sox flac lame vorbis-tools opus-tools espeak-ng webp systemd python3-onnx chromium haproxy \
	glslc libvulkan-dev mesa-vulkan-drivers

OLLAMA_MOD := github.com/ollama/ollama
MALGO_MOD  := github.com/gen2brain/malgo@v0.11.24
# whisper.cpp's Go bindings ship samples/jfk.wav, the speech sample tests use.
WHISPER_GO_MOD := github.com/ggerganov/whisper.cpp/bindings/go@v0.0.0-20260227185758-9453b4b9be9b

# Folders of the pinned module's native sources (in the module cache).
OLLAMA_DIR = $(shell $(GO) list -m -f '{{.Dir}}' $(OLLAMA_MOD) 2>/dev/null)

export CGO_ENABLED := 1
export CGO_CFLAGS   = $(OPT)
export CGO_CXXFLAGS = $(OPT)
export CGO_CPPFLAGS = -I$(BUILD)/include -I$(OLLAMA_DIR)/llama/llama.cpp/include -I$(OLLAMA_DIR)/ml/backend/ggml/ggml/include -I$(OLLAMA_DIR)/llama/llama.cpp/tools/mtmd

.PHONY: all build deps test run bench soak lint fuzz clean models env vet-whispercpp screenshots arm64 deps-arm64 smoke-arm64 \
	vulkan test-gpu cuda

all: build

deps: $(BUILD)/.deps

# Packages are installed only when missing, so the target is idempotent and
# needs no network on a machine that has them (dpkg-query, not dpkg -s: a
# package installed for two architectures is ambiguous to dpkg -s).
$(BUILD)/.deps: Makefile go.mod go.sum
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	$(GO) mod download
	@mkdir -p $(BUILD)/include/miniaudio
	@dir=$$($(GO) mod download -json $(MALGO_MOD) | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'); \
	install -m 0644 "$$dir/miniaudio.h" $(BUILD)/include/miniaudio/miniaudio.h
	@mkdir -p $(BUILD)/samples
	@dir=$$($(GO) mod download -json $(WHISPER_GO_MOD) | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'); \
	install -m 0644 "$$dir/samples/jfk.wav" $(BUILD)/samples/jfk.wav
	@touch $@

# GPU=vulkan also builds ggml's Vulkan backend (NVIDIA, AMD, Intel GPUs and
# Mesa's software lavapipe) into $(BIN)/libggml-vulkan.so, beside owl, where
# owl loads it at start; without GPU= the build is CPU-only and any backend
# library a previous GPU build left there is removed. GPU=cuda: see below.
GPU ?=
build: deps $(if $(filter vulkan,$(GPU)),vulkan) $(if $(filter cuda,$(GPU)),cuda)
	$(GO) build -o $(BIN)/owl ./cmd/owl
ifeq ($(GPU),vulkan)
	install -m 0755 $(VULKAN_LIB) $(BIN)/libggml-vulkan.so
else ifeq ($(GPU),cuda)
	install -m 0755 $(CUDA_LIB) $(BIN)/libggml-cuda.so
else
	@rm -f $(BIN)/libggml-vulkan.so $(BIN)/libggml-cuda.so
endif

# ggml's GPU backends, built from the pinned module's sources by
# cgo/ggmlbackend/build.sh into one library each, holding the backend and
# its own copy of ggml's base. Vulkan: its shaders generated and compiled
# with glslc. A library is kept in the user cache under a key of everything
# it is built from (the module's version, the build files, the compilers),
# so a fresh clone or a `make clean` does not build it again (Vulkan: about
# 3 minutes on 2 cores).
OWL_CACHE ?= $(HOME)/.cache/owl
BACKEND_FILES = cgo/ggmlbackend/build.sh cgo/ggmlbackend/exports.map
VK_KEY = $(shell { $(GO) list -m -f '{{.Version}}' $(OLLAMA_MOD); cat $(BACKEND_FILES) \
	cgo/ggmlbackend/vulkan/include/vulkan/vulkan.hpp cgo/ggmlbackend/vulkan/feature-tests/*.comp; $(CXX) --version; glslc --version; } 2>/dev/null | sha256sum | cut -c1-16)
VK_CACHE   = $(OWL_CACHE)/ggml-vulkan-$(VK_KEY)
VULKAN_LIB = $(VK_CACHE)/libggml-vulkan.so

# make deps installs what the Vulkan build needs (glslc, libvulkan-dev, and
# Mesa's drivers with lavapipe for the tests): make test builds it too.
vulkan: deps
	@if [ ! -f $(VULKAN_LIB) ]; then \
		CXX=$(CXX) CC=$(CC) sh cgo/ggmlbackend/build.sh vulkan $(OLLAMA_DIR)/ml/backend/ggml/ggml $(BUILD)/vulkan && \
		mkdir -p $(VK_CACHE) && cp $(BUILD)/vulkan/libggml-vulkan.so $(VULKAN_LIB).tmp && mv $(VULKAN_LIB).tmp $(VULKAN_LIB); \
	fi
	@echo "vulkan backend: $(VULKAN_LIB)"

# GPU=cuda builds ggml's CUDA backend (NVIDIA) with the CUDA toolkit's
# nvcc (CUDA_HOME, default /usr/local/cuda), for CUDA_ARCHS (default: the
# GPUs of this machine). Debian 12 packages no CUDA toolkit and these
# machines have no NVIDIA GPU, so this path is not built or tested here.
CUDA_HOME  ?= /usr/local/cuda
CUDA_ARCHS ?= native
CUDA_KEY = $(shell { $(GO) list -m -f '{{.Version}}' $(OLLAMA_MOD); cat $(BACKEND_FILES); $(CXX) --version; \
	$(CUDA_HOME)/bin/nvcc --version; echo $(CUDA_ARCHS); } 2>/dev/null | sha256sum | cut -c1-16)
CUDA_CACHE = $(OWL_CACHE)/ggml-cuda-$(CUDA_KEY)
CUDA_LIB   = $(CUDA_CACHE)/libggml-cuda.so
cuda: deps
	@if [ ! -f $(CUDA_LIB) ]; then \
		CXX=$(CXX) CC=$(CC) CUDA_HOME=$(CUDA_HOME) CUDA_ARCHS="$(CUDA_ARCHS)" \
		sh cgo/ggmlbackend/build.sh cuda $(OLLAMA_DIR)/ml/backend/ggml/ggml $(BUILD)/cuda && \
		mkdir -p $(CUDA_CACHE) && cp $(BUILD)/cuda/libggml-cuda.so $(CUDA_LIB).tmp && mv $(CUDA_LIB).tmp $(CUDA_LIB); \
	fi
	@echo "cuda backend: $(CUDA_LIB)"

# The GPU tests (TestGPU* of each package) on Mesa's software Vulkan GPU,
# lavapipe, alone (VK_ICD_FILENAMES): ggml skips a CPU-type device unless
# GGML_VK_VISIBLE_DEVICES names it. OWL_TEST_GPU makes a test that finds
# no GPU fail instead of skipping. Mesa keeps the pipelines it compiles
# in OWL_CACHE (tens of seconds the first time, on lavapipe).
LAVAPIPE_ICD = $(firstword $(wildcard /usr/share/vulkan/icd.d/lvp_icd.*.json))
GPU_TEST_ENV = OWL_LIBRARY_PATH=$(VK_CACHE) VK_ICD_FILENAMES=$(LAVAPIPE_ICD) GGML_VK_VISIBLE_DEVICES=0 \
	MESA_SHADER_CACHE_DIR=$(OWL_CACHE)/mesa OWL_TEST_GPU=vulkan
GPU_TEST_PKGS := ./bindings/llama ./llm ./speech ./engine ./server ./cmd/owl
test-gpu: vulkan
	$(GPU_TEST_ENV) $(GO) test -p 1 -run 'GPU' $(GPU_TEST_PKGS)

# One test binary at a time: ggml's worker threads spin while they wait, so
# binaries run side by side on few cores slow each other down many times over.
# The scheduler's package, and the server in its short form (the load test
# shortened), also run under the race detector.
test: deps vet-whispercpp vulkan
	$(GO) vet ./...
	$(GO) test -p 1 ./...
	$(GO) test -race -p 1 ./engine
	$(GO) test -race -short -p 1 ./server
	$(MAKE) --no-print-directory test-gpu

# The optional whisper.cpp backend (build tag whispercpp) needs whisper.h,
# which no Debian 12 package carries. So that this build cannot rot unseen,
# vet-whispercpp vets it against the header whisper.cpp's own sources ship
# in the npm package whisper.rn (fetched once into build/whisper.rn; not
# linked, only read by cgo). Without npm it says so and skips.
WHISPER_RN := whisper.rn@0.7.4
vet-whispercpp: deps
	@if ! command -v npm >/dev/null 2>&1; then echo "vet-whispercpp: npm not found, skipped"; exit 0; fi; \
	if [ ! -f $(BUILD)/whisper.rn/package/cpp/whisper.h ]; then \
		mkdir -p $(BUILD)/whisper.rn && cd $(BUILD)/whisper.rn && npm pack --silent $(WHISPER_RN) >/dev/null && \
		tar xzf whisper.rn-*.tgz --wildcards 'package/cpp/*.h' && rm -f whisper.rn-*.tgz || exit 1; \
	fi
	CPATH=$(BUILD)/whisper.rn/package/cpp $(GO) vet -tags whispercpp ./bindings/whispercpp ./speech/whispercpp ./cmd/owl

# `make run` builds owl, writes the generated test models to build/models and
# serves that folder with `owl serve` (http://127.0.0.1:11435, OpenAI and
# ollama APIs) until Ctrl-C. SERVE_ARGS adds flags, e.g.
# SERVE_ARGS="--host 127.0.0.1:8080". The models have random weights, so
# their answers are gibberish; any other model files put in build/models are
# served too.
SERVE_ARGS ?=
run: build models
	exec $(BIN)/owl serve --models-dir $(BUILD)/models $(SERVE_ARGS)

# The generated test models: a tiny text model ("tiny") with its vision
# projector (tiny-mmproj.gguf, so "tiny" takes images), and a micro English
# whisper model ("ggml-micro.en").
models: deps
	@mkdir -p $(BUILD)/models
	@[ -f $(BUILD)/models/tiny.gguf ] || $(GO) run ./models/testmodel/gen -kind llm -size tiny -o $(BUILD)/models/tiny.gguf
	@[ -f $(BUILD)/models/tiny-mmproj.gguf ] || $(GO) run ./models/testmodel/gen -kind mmproj -size tiny -o $(BUILD)/models/tiny-mmproj.gguf
	@[ -f $(BUILD)/models/ggml-micro.en.bin ] || $(GO) run ./models/testmodel/gen -kind whisper -size micro -vocab en -o $(BUILD)/models/ggml-micro.en.bin

BENCH_MODELS := $(BUILD)/models/1b-f16.gguf $(BUILD)/models/1b-q8_0.gguf

$(BUILD)/models/1b-%.gguf: | deps
	@mkdir -p $(BUILD)/models
	$(GO) run ./models/testmodel/gen -kind llm -size realistic -type $* -o $@

bench: build $(BENCH_MODELS)
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...
	$(BIN)/owl bench llm -m $(BUILD)/models/1b-f16.gguf -t 2
	$(BIN)/owl bench llm -m $(BUILD)/models/1b-q8_0.gguf -t 2

# `make soak` serves the generated models and sends them, for SOAK_DURATION,
# the mixed load of `owl bench serve` from SOAK_CLIENTS clients, many more
# than the server runs at once: every kind of chat and completion, pictures,
# 11-s transcriptions with the default beam search and fallback, shorter
# ones with beams, abandoned streams, cancelled requests and malformed
# bodies. It fails if a request fails or times out, if the server dies, or
# if it does not end idle, within its memory budget, and stop cleanly.
SOAK_DURATION ?= 3m
SOAK_CLIENTS  ?= 96
SOAK_ADDR     ?= 127.0.0.1:11499
SOAK_KINDS    := chat,chat-stream,completion,completion-stream,ollama-chat,ollama-generate,image,transcription,transcription-beams,disconnect,cancel,malformed
soak: build models
	@$(BIN)/owl serve --models-dir $(BUILD)/models --host $(SOAK_ADDR) --max-memory 2GiB > $(BUILD)/soak-serve.log 2>&1 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null' EXIT; \
	for i in $$(seq 100); do grep -q 'serving on' $(BUILD)/soak-serve.log && break; sleep 0.1; done; \
	$(BIN)/owl bench serve --url http://$(SOAK_ADDR) --model tiny --speech-model ggml-micro.en --audio $(BUILD)/samples/jfk.wav \
		--kinds $(SOAK_KINDS) --clients $(SOAK_CLIENTS) --duration $(SOAK_DURATION); status=$$?; \
	kill -INT $$pid; wait $$pid; served=$$?; trap - EXIT; \
	echo "owl serve exited $$served (log: $(BUILD)/soak-serve.log)"; \
	[ $$status = 0 ] && [ $$served = 0 ]

lint: deps
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...

# The page's screenshots in docs/screenshots, made by its browser tests.
screenshots: deps
	OWL_SCREENSHOTS=$(CURDIR)/docs/screenshots $(GO) test -count=1 -run '^TestPage' ./server

# Run every fuzz target for FUZZTIME each.
FUZZTIME ?= 30s
fuzz: deps
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

clean:
	rm -rf $(BIN) $(BUILD)

# arm64 (Raspberry Pi 5, Jetson, ARM mini PCs). On an arm64 machine plain
# `make build` builds for it (MARCH=native, or a named one such as
# MARCH=armv8.2-a+fp16+dotprod). `make arm64` cross-compiles here into
# bin/linux-arm64/owl with Debian's aarch64 gcc and the arm64 builds of the
# libraries owl links (Debian multiarch); `make smoke-arm64` runs that
# binary under qemu-user: its version, a generation and a transcription of
# the generated models. ARM64_MARCH is what it is built for: the Cortex-A76
# of a Raspberry Pi 5 and any later core.
ARM64_MARCH ?= armv8.2-a+fp16+dotprod
ARM64_PACKAGES := gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user-static \
	libespeak-ng-dev:arm64 portaudio19-dev:arm64 libstdc++-12-dev:arm64
ARM64_BIN := $(BIN)/linux-arm64

deps-arm64: deps
	@missing=$$(for p in $(ARM64_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO dpkg --add-architecture arm64 && $$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

arm64: deps-arm64
	$(MAKE) --no-print-directory build GOARCH=arm64 CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ \
		MARCH=$(ARM64_MARCH) BIN=$(ARM64_BIN) PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig

# The arm64 libraries are Debian's multiarch ones (/lib/aarch64-linux-gnu),
# where qemu finds them itself; the cross compiler's own copy of libc
# (-L /usr/aarch64-linux-gnu) hangs cgo binaries at start under qemu 7.2.
QEMU_ARM64 := qemu-aarch64-static
smoke-arm64: arm64 models
	$(QEMU_ARM64) $(ARM64_BIN)/owl version
	$(QEMU_ARM64) $(ARM64_BIN)/owl generate -m $(BUILD)/models/tiny.gguf -p "Once upon a time" -n 8 --temp 0 -t 2
	$(QEMU_ARM64) $(ARM64_BIN)/owl transcribe -m $(BUILD)/models/ggml-micro.en.bin -t 2 $(BUILD)/samples/jfk.wav

# `eval "$(make -s env)"` sets up a shell to run go commands directly.
env:
	@echo 'export CGO_ENABLED=1'
	@echo "export CGO_CFLAGS='$(CGO_CFLAGS)'"
	@echo "export CGO_CXXFLAGS='$(CGO_CXXFLAGS)'"
	@echo "export CGO_CPPFLAGS='$(CGO_CPPFLAGS)'"
