package llama

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include "ggml-backend.h"

extern void owlLlamaLog(int level, char *text, void *data);

typedef void (*owl_log_set_fn)(ggml_log_callback, void *);

// owl_quiet_log drops ggml's loader's lines while a backend library loads:
// owl reports which loaded itself (a library whose driver finds no device
// is no error on a machine without a GPU).
static void owl_quiet_log(enum ggml_log_level level, const char *text, void *data) {}

static ggml_backend_reg_t owl_backend_load(const char *path) {
	ggml_log_set(owl_quiet_log, NULL);
	ggml_backend_reg_t reg = ggml_backend_load(path);
	ggml_log_set((ggml_log_callback)owlLlamaLog, NULL);
	return reg;
}

// owl_backend_route_log opens the backend library at path and, when it
// exports ggml_log_set (owl's build of a backend carries its own copy of
// ggml's base library, and so its own log), routes its log into owl's
// before ggml's loader initializes it. The handle stays open: the loader
// opens the same library again.
static void owl_backend_route_log(const char *path) {
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		return;
	}
	owl_log_set_fn f = (owl_log_set_fn)dlsym(h, "ggml_log_set");
	if (f != NULL) {
		f((ggml_log_callback)owlLlamaLog, NULL);
	}
}
*/
import "C"

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"
)

// GPU backends are ggml backend libraries (libggml-vulkan.so, ...) that
// ggml's loader opens at run time: a binary built without one, or run where
// the library or its driver is missing, computes on the CPU. They are
// looked for in the folders of OWL_LIBRARY_PATH (a list like PATH), or by
// default beside the executable and in its ../lib/owl.

// LibraryPath is the list of folders searched for backend libraries.
func LibraryPath() []string {
	if p := os.Getenv("OWL_LIBRARY_PATH"); p != "" {
		return filepath.SplitList(p)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	dir := filepath.Dir(exe)
	return []string{dir, filepath.Join(dir, "..", "lib", "owl")}
}

// BackendLibrary is a backend library found on the library path.
type BackendLibrary struct {
	Path   string
	Loaded bool   // ggml registered the backend
	Name   string // its registered name ("Vulkan"), when loaded
}

var libraries []BackendLibrary

// loadBackends registers the backend libraries of the library path, one
// per backend name (the first folder that has it wins). ollama's own
// search of its install folders is turned off: owl's layout is not
// ollama's.
func loadBackends() {
	os.Setenv("OLLAMA_LIBRARY_PATH", "")
	seen := map[string]bool{}
	for _, dir := range LibraryPath() {
		files, _ := filepath.Glob(filepath.Join(dir, "libggml-*.so")) // in name order
		for _, f := range files {
			name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "libggml-"), ".so")
			if name == "base" || name == "cpu" || seen[name] {
				continue
			}
			seen[name] = true
			lib := BackendLibrary{Path: f}
			cpath := C.CString(f)
			C.owl_backend_route_log(cpath)
			reg := C.owl_backend_load(cpath)
			C.free(unsafe.Pointer(cpath))
			if reg != nil {
				lib.Loaded, lib.Name = true, C.GoString(C.ggml_backend_reg_name(reg))
			}
			libraries = append(libraries, lib)
		}
	}
}

// Libraries lists the backend libraries found on the library path and
// whether each loaded (a library whose driver finds no device does not).
func Libraries() []BackendLibrary {
	Init()
	return slices.Clone(libraries)
}

// DeviceKind is what a compute device is.
type DeviceKind string

// Kinds of devices.
const (
	DeviceCPU   DeviceKind = "cpu"
	DeviceGPU   DeviceKind = "gpu"
	DeviceIGPU  DeviceKind = "igpu" // integrated: shares the system's memory
	DeviceAccel DeviceKind = "accel"
)

// Device is a compute device of a registered backend.
type Device struct {
	Name        string // ggml's name: "CPU", "Vulkan0"
	Description string // the hardware: "NVIDIA GeForce RTX 4090", "llvmpipe (LLVM 15.0.6, 256 bits)"
	Backend     string // the backend: "CPU", "Vulkan"
	Kind        DeviceKind
	Free, Total uint64 // memory in bytes, as the driver reports it now
	ID          string // a stable id (PCI bus id or UUID) when the driver gives one

	dev       C.ggml_backend_dev_t
	backendID string // the backend's id of the device (props.id) and its library, as ollama's ml package matches them
	library   string
}

// BackendID is the device's id and library as ollama's ml package names
// devices (ml.DeviceID).
func (d Device) BackendID() (id, library string) { return d.backendID, d.library }

// IsSoftware reports whether the device is Mesa's software Vulkan GPU,
// lavapipe (llvmpipe underneath), which computes on the CPU's cores.
func (d Device) IsSoftware() bool { return strings.HasPrefix(d.Description, "llvmpipe") }

// softwareGPUMicroBatch is the most tokens one llama.cpp graph takes on
// lavapipe. There, ggml-vulkan's prompt graphs of more than 32 tokens give
// wrong logits for the tokens past the 32nd, now and then (NMSE up to
// 5e-2 against the CPU, with flash attention or without), while graphs of
// up to 32 tokens, and Whisper's own graphs of 1500 frames, match the CPU.
// llama.cpp splits a larger batch into graphs of this many tokens.
const softwareGPUMicroBatch = 32

// IsGPU reports whether the device is a GPU (discrete or integrated).
func (d Device) IsGPU() bool { return d.Kind == DeviceGPU || d.Kind == DeviceIGPU }

// Devices lists every compute device, the CPU included, with the memory
// each has free now.
func Devices() []Device {
	Init()
	n := int(C.ggml_backend_dev_count())
	out := make([]Device, 0, n)
	for i := range n {
		d := C.ggml_backend_dev_get(C.size_t(i))
		var props C.struct_ggml_backend_dev_props
		C.ggml_backend_dev_get_props(d, &props)
		dev := Device{
			Name:        C.GoString(C.ggml_backend_dev_name(d)),
			Description: C.GoString(C.ggml_backend_dev_description(d)),
			Backend:     C.GoString(C.ggml_backend_reg_name(C.ggml_backend_dev_backend_reg(d))),
			Free:        uint64(props.memory_free),
			Total:       uint64(props.memory_total),
			dev:         d,
		}
		if props.id != nil {
			dev.backendID = C.GoString(props.id)
		}
		if props.library != nil {
			dev.library = C.GoString(props.library)
		}
		dev.ID = dev.backendID
		if props.device_id != nil {
			dev.ID = C.GoString(props.device_id)
		}
		switch C.ggml_backend_dev_type(d) {
		case C.GGML_BACKEND_DEVICE_TYPE_CPU:
			dev.Kind = DeviceCPU
		case C.GGML_BACKEND_DEVICE_TYPE_GPU:
			dev.Kind = DeviceGPU
		case C.GGML_BACKEND_DEVICE_TYPE_IGPU:
			dev.Kind = DeviceIGPU
		default:
			dev.Kind = DeviceAccel
		}
		out = append(out, dev)
	}
	return out
}

// GPUs lists the GPU devices.
func GPUs() []Device {
	var out []Device
	for _, d := range Devices() {
		if d.IsGPU() {
			out = append(out, d)
		}
	}
	return out
}

// DeviceByName finds a device by ggml's name (case-insensitive).
func DeviceByName(name string) (Device, bool) {
	for _, d := range Devices() {
		if strings.EqualFold(d.Name, name) {
			return d, true
		}
	}
	return Device{}, false
}

// Memory reports the device's free and total memory now.
func (d Device) Memory() (free, total uint64) {
	if d.dev == nil {
		return 0, 0
	}
	var f, t C.size_t
	C.ggml_backend_dev_memory(d.dev, &f, &t)
	return uint64(f), uint64(t)
}
