#!/bin/sh
# Builds ggml's Vulkan backend from the pinned ollama module's sources into
# one library, OUT/libggml-vulkan.so, that ggml's backend loader opens at
# run time (see doc.go). Usage: build.sh GGML_DIR OUT
#
#   GGML_DIR  the module's ml/backend/ggml/ggml folder
#   OUT       the folder to build in (shaders, objects, the library)
#
# CXX, CC, GLSLC, JOBS and VK_OPT may be set; the host compiler (HOST_CXX)
# builds the shader generator, which runs here even when cross-compiling.
set -eu
export CC CXX
ggml=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
CC=${CC:-cc}
CXX=${CXX:-c++}
HOST_CXX=${HOST_CXX:-c++}
GLSLC=${GLSLC:-glslc}
JOBS=${JOBS:-$(nproc)}
VK_OPT=${VK_OPT:--O2}
src=$ggml/src
vk=$src/ggml-vulkan
mkdir -p "$out/spv" "$out/obj"

# Which shader extensions this glslc compiles, from the probe shaders of
# feature-tests/: each one on is a define for the generator and the backend.
defs=""
for probe in coopmat:GGML_VULKAN_COOPMAT_GLSLC_SUPPORT coopmat2:GGML_VULKAN_COOPMAT2_GLSLC_SUPPORT \
	integer_dot:GGML_VULKAN_INTEGER_DOT_GLSLC_SUPPORT bfloat16:GGML_VULKAN_BFLOAT16_GLSLC_SUPPORT; do
	name=${probe%%:*}
	def=${probe#*:}
	if "$GLSLC" -o /dev/null -fshader-stage=compute --target-env=vulkan1.3 "$here/feature-tests/$name.comp" 2>/dev/null; then
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
	'f=$(basename "$1"); "$2" --glslc "$3" --source "$1" --output-dir "$4/spv" --target-hpp "$4/ggml-vulkan-shaders.hpp" --target-cpp "$4/$f.cpp" >/dev/null' \
	_ {} "$gen" "$GLSLC" "$out"

# The backend with its own copy of ggml's base library (tensors, graphs,
# buffers): the library needs nothing from the process that loads it, and
# exports only the loader's two entry points.
flags="$VK_OPT -fPIC -fvisibility=hidden -DNDEBUG -DGGML_BACKEND_DL -DGGML_BACKEND_BUILD -DGGML_BACKEND_SHARED \
	-DGGML_SHARED -DGGML_BUILD -DGGML_VERSION=0x0 -DGGML_COMMIT=0x0 -D_GNU_SOURCE $defs \
	-I$ggml/include -I$src -I$out"
# ggml-vulkan.cpp, the longest to compile, goes first; the shader data
# files compile beside it.
jobs="$vk/ggml-vulkan.cpp"
for f in ggml.c ggml.cpp ggml-alloc.c ggml-backend.cpp ggml-opt.cpp ggml-threading.cpp ggml-quants.c gguf.cpp \
	mem_hip.cpp mem_nvml.cpp mem_dxgi_pdh.cpp; do
	jobs="$jobs $src/$f"
done
jobs="$jobs $(ls "$out"/*.comp.cpp)"
printf '%s\n' $jobs | xargs -P "$JOBS" -I{} sh -c '
	o="$2/obj/$(basename "$1").o"
	[ "$o" -nt "$1" ] && exit 0
	case $1 in
	*.c) $CC $3 -std=gnu11 -c "$1" -o "$o" ;;
	*/ggml-vulkan.cpp) $CXX $3 -std=c++17 -I"$4/include" -c "$1" -o "$o" ;;
	*) $CXX $3 -std=c++17 -c "$1" -o "$o" ;;
	esac' _ {} "$out" "$flags" "$here"
$CXX -shared -o "$out/libggml-vulkan.so.tmp" "$out"/obj/*.o -Wl,--version-script="$here/exports.map" \
	-Wl,--no-undefined -lvulkan -ldl -pthread
mv "$out/libggml-vulkan.so.tmp" "$out/libggml-vulkan.so"
echo "vulkan: built $out/libggml-vulkan.so"
