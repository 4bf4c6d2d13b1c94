#!/bin/sh
# Builds one of ggml's GPU backends from the pinned ollama module's sources
# into one library, OUT/libggml-BACKEND.so, that ggml's backend loader
# opens at run time (owl looks for it beside its binary; see
# bindings/llama/devices.go). Usage: build.sh BACKEND GGML_DIR OUT
#
#   BACKEND   vulkan or cuda
#   GGML_DIR  the module's ml/backend/ggml/ggml folder
#   OUT       the folder to build in (shaders, objects, the library)
#
# The library holds the backend and its own copy of ggml's base (tensors,
# graphs, buffers), so it needs nothing from the process that loads it; it
# exports only the loader's entry points and its log setter (exports.map).
#
# CC, CXX, JOBS and OPT may be set. Vulkan: GLSLC, and HOST_CXX for the
# shader generator, which runs on the build machine. CUDA: NVCC (default
# $CUDA_HOME/bin/nvcc), CUDA_ARCHS (nvcc's -arch; default native: the GPUs
# of the build machine; e.g. "sm_80 sm_86 sm_89 sm_90").
set -eu
backend=$1
ggml=$2
out=$3
here=$(cd "$(dirname "$0")" && pwd)
CC=${CC:-cc}
CXX=${CXX:-c++}
export CC CXX
JOBS=${JOBS:-$(nproc)}
OPT=${OPT:--O2}
src=$ggml/src
mkdir -p "$out/obj"

defs=""  # backend feature defines, for every compile
jobs=""  # backend sources: compiled beside ggml's base
libs=""
case $backend in
vulkan)
	GLSLC=${GLSLC:-glslc}
	HOST_CXX=${HOST_CXX:-c++}
	vk=$src/ggml-vulkan
	mkdir -p "$out/spv"
	# Which shader extensions this glslc compiles, from the probe shaders
	# of vulkan/feature-tests: each one on is a define for the generator
	# and the backend.
	for probe in coopmat:GGML_VULKAN_COOPMAT_GLSLC_SUPPORT coopmat2:GGML_VULKAN_COOPMAT2_GLSLC_SUPPORT \
		integer_dot:GGML_VULKAN_INTEGER_DOT_GLSLC_SUPPORT bfloat16:GGML_VULKAN_BFLOAT16_GLSLC_SUPPORT; do
		name=${probe%%:*}
		def=${probe#*:}
		if "$GLSLC" -o /dev/null -fshader-stage=compute --target-env=vulkan1.3 "$here/vulkan/feature-tests/$name.comp" 2>/dev/null; then
			echo "vulkan: glslc compiles $name shaders"
			defs="$defs -D$def"
		else
			echo "vulkan: glslc does not compile $name shaders; those kernels are left out"
		fi
	done
	# The shader generator, then the header naming every shader, then each
	# shader compiled to SPIR-V and embedded in a C++ file of its own.
	gen=$out/vulkan-shaders-gen
	$HOST_CXX -O2 -std=c++17 $defs -o "$gen" "$vk/vulkan-shaders/vulkan-shaders-gen.cpp" -pthread
	"$gen" --output-dir "$out/spv" --target-hpp "$out/ggml-vulkan-shaders.hpp"
	ls "$vk"/vulkan-shaders/*.comp | xargs -P "$JOBS" -I{} sh -c \
		'f=$(basename "$1"); [ "$4/$f.cpp" -nt "$1" ] && exit 0; "$2" --glslc "$3" --source "$1" --output-dir "$4/spv" --target-hpp "$4/ggml-vulkan-shaders.hpp" --target-cpp "$4/$f.cpp" >/dev/null' \
		_ {} "$gen" "$GLSLC" "$out"
	# ggml-vulkan.cpp, the longest to compile, goes first.
	jobs="$vk/ggml-vulkan.cpp $(ls "$out"/*.comp.cpp)"
	libs="-lvulkan"
	;;
cuda)
	CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
	NVCC=${NVCC:-$CUDA_HOME/bin/nvcc}
	CUDA_ARCHS=${CUDA_ARCHS:-native}
	command -v "$NVCC" >/dev/null || { echo "cuda: no nvcc at $NVCC (install the CUDA toolkit, or set NVCC or CUDA_HOME)" >&2; exit 1; }
	cu=$src/ggml-cuda
	defs="-DGGML_CUDA_PEER_MAX_BATCH_SIZE=128 -DGGML_CUDA_USE_GRAPHS"
	arch=""
	for a in $CUDA_ARCHS; do arch="$arch -arch=$a"; done
	# As ggml's own build: every kernel file, the flash-attention and
	# quantized matrix-product template instances, and the vector
	# flash-attention kernels of f16, q4_0 and q8_0 caches.
	jobs="$(ls "$cu"/*.cu) $(ls "$cu"/template-instances/fattn-tile*.cu "$cu"/template-instances/fattn-mma*.cu \
		"$cu"/template-instances/mmq*.cu "$cu"/template-instances/mmf*.cu \
		"$cu"/template-instances/fattn-vec*q4_0-q4_0.cu "$cu"/template-instances/fattn-vec*q8_0-q8_0.cu \
		"$cu"/template-instances/fattn-vec*f16-f16.cu 2>/dev/null)"
	libs="-L$CUDA_HOME/lib64 -lcudart -lcublas -lcublasLt -lcuda"
	export NVCC_FLAGS="$OPT -std=c++17 -use_fast_math -extended-lambda $arch -Xcompiler -fPIC,-fvisibility=hidden"
	;;
*)
	echo "build.sh: backend $backend: want vulkan or cuda" >&2
	exit 2
	;;
esac

# ggml's base, with the backend's sources; each object rebuilt only when
# its source is newer.
flags="$OPT -fPIC -fvisibility=hidden -DNDEBUG -DGGML_BACKEND_DL -DGGML_BACKEND_BUILD -DGGML_BACKEND_SHARED \
	-DGGML_SHARED -DGGML_BUILD -DGGML_VERSION=0x0 -DGGML_COMMIT=0x0 -D_GNU_SOURCE $defs \
	-I$ggml/include -I$src -I$out"
for f in ggml.c ggml.cpp ggml-alloc.c ggml-backend.cpp ggml-opt.cpp ggml-threading.cpp ggml-quants.c gguf.cpp \
	mem_hip.cpp mem_nvml.cpp mem_dxgi_pdh.cpp; do
	jobs="$jobs $src/$f"
done
printf '%s\n' $jobs | xargs -P "$JOBS" -I{} sh -c '
	o="$2/obj/$(basename "$1").o"
	[ "$o" -nt "$1" ] && exit 0
	case $1 in
	*.c) $CC $3 -std=gnu11 -c "$1" -o "$o" ;;
	*.cu) $NVCC $NVCC_FLAGS $(echo "$3" | sed "s/ -fPIC//; s/ -fvisibility=hidden//; s/-O[0-9s]//") -I$(dirname "$1")/.. -c "$1" -o "$o" ;;
	# Debian 12 has Vulkan headers older than ggml-vulkan expects: the
	# wrapper in vulkan/include adds what they lack.
	*/ggml-vulkan.cpp) $CXX $3 -std=c++17 -I"$4/vulkan/include" -c "$1" -o "$o" ;;
	*) $CXX $3 -std=c++17 -c "$1" -o "$o" ;;
	esac' _ {} "$out" "$flags" "$here"
lib=$out/libggml-$backend.so
$CXX -shared -o "$lib.tmp" "$out"/obj/*.o -Wl,--version-script="$here/exports.map" -Wl,--no-undefined $libs -ldl -pthread
mv "$lib.tmp" "$lib"
echo "$backend: built $lib"
