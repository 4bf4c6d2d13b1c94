package models_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

// sampleONNX is a small model with what Piper's graphs use: initializers
// of floats and integers, a Conv with integer-list attributes, a Constant
// holding a tensor, an op with a float attribute, and inputs whose shapes
// are partly symbolic.
func sampleONNX() *models.ONNXModel {
	w := make([]float32, 4*2*3)
	for i := range w {
		w[i] = float32(i) / 10
	}
	return &models.ONNXModel{IRVersion: 8, Producer: "pytorch", ProducerVersion: "2.1.0", Opsets: map[string]int64{"": 15},
		Metadata: map[string]string{"voice": "test"},
		Graph: models.ONNXGraph{Name: "main_graph",
			Initializers: []models.ONNXTensor{testmodel.FloatTensor("enc.conv.weight", []int64{4, 2, 3}, w),
				testmodel.Int64Tensor("onnx::Reshape_7", []int64{2}, []int64{1, -1})},
			Nodes: []models.ONNXNode{
				{Name: "/enc/conv/Conv", OpType: "Conv", Inputs: []string{"x", "enc.conv.weight", ""}, Outputs: []string{"h"},
					Attrs: map[string]models.ONNXAttr{"dilations": {Type: models.ONNXAttrInts, Ints: []int64{2}}, "pads": {Type: models.ONNXAttrInts, Ints: []int64{2, 2}}}},
				{Name: "/Constant", OpType: "Constant", Outputs: []string{"c"},
					Attrs: map[string]models.ONNXAttr{"value": {Type: models.ONNXAttrTensor, T: ptr(testmodel.FloatTensor("", nil, []float32{0.5}))}}},
				{Name: "/LeakyRelu", OpType: "LeakyRelu", Inputs: []string{"h"}, Outputs: []string{"y"},
					Attrs: map[string]models.ONNXAttr{"alpha": {Type: models.ONNXAttrFloat, F: 0.1}}},
			},
			Inputs:  []models.ONNXValueInfo{{Name: "x", ElemType: models.ONNXFloat, Shape: []models.ONNXDim{{Value: 1}, {Value: 2}, {Param: "frames"}}}},
			Outputs: []models.ONNXValueInfo{{Name: "y", ElemType: models.ONNXFloat, Shape: []models.ONNXDim{{Value: 1}, {Value: 4}, {Param: "frames"}}}},
		}}
}

func ptr[T any](v T) *T { return &v }

func TestONNXRoundTrip(t *testing.T) {
	want := sampleONNX()
	got, err := models.ParseONNX(testmodel.EncodeONNX(want))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parsed %+v\nwrote  %+v", got, want)
	}
	w, _ := got.Graph.Initializer("enc.conv.weight").Floats()
	if len(w) != 24 || w[23] != 2.3 {
		t.Fatalf("weights %v", w)
	}
}

// python is Debian's python3, which `make deps` gives the onnx package
// (python3-onnx), ahead of any other python3 on the path.
func python(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if err := exec.Command(p, "-c", "import onnx").Run(); err == nil {
			return p
		}
	}
	t.Fatal("python3's onnx package is missing: run `make deps` (python3-onnx)")
	return ""
}

// The onnx package's own checker accepts owl's files, and owl reads the
// files the onnx package writes, tensors stored in typed fields included.
func TestONNXAgainstTheOnnxPackage(t *testing.T) {
	py := python(t)
	dir := t.TempDir()
	ours := filepath.Join(dir, "ours.onnx")
	if err := os.WriteFile(ours, testmodel.EncodeONNX(sampleONNX()), 0o644); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(dir, "theirs.onnx")
	script := `
import sys, onnx
from onnx import helper, TensorProto
m = onnx.load(sys.argv[1])
onnx.checker.check_model(m, full_check=True)
print(len(m.graph.node), len(m.graph.initializer), m.graph.node[0].op_type, list(m.graph.node[0].attribute[0].ints))
w = helper.make_tensor("w", TensorProto.FLOAT, [2, 3], [0.5, -1, 2, 3.25, 0, 7])
ids = helper.make_tensor("ids", TensorProto.INT64, [3], [1, -2, 300])
half = helper.make_tensor("half", TensorProto.FLOAT16, [2], [1.5, -0.25])
node = helper.make_node("Gemm", ["a", "w", ""], ["b"], name="gemm", alpha=0.5, transB=1)
g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3])],
    [helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2])], [w, ids, half])
onnx.save(helper.make_model(g, producer_name="onnx-test", opset_imports=[helper.make_opsetid("", 13)]), sys.argv[2])
`
	out, err := exec.Command(py, "-c", script, ours, theirs).CombinedOutput()
	if err != nil {
		t.Fatalf("the onnx package refused owl's file: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "3 2 Conv [2]" {
		t.Fatalf("the onnx package read %q", got)
	}
	b, err := os.ReadFile(theirs)
	if err != nil {
		t.Fatal(err)
	}
	m, err := models.ParseONNX(b)
	if err != nil {
		t.Fatal(err)
	}
	g := m.Graph
	w, err := g.Initializer("w").Floats()
	if err != nil || !reflect.DeepEqual(w, []float32{0.5, -1, 2, 3.25, 0, 7}) {
		t.Fatalf("w = %v (%v)", w, err)
	}
	ids, err := g.Initializer("ids").Int64s()
	if err != nil || !reflect.DeepEqual(ids, []int64{1, -2, 300}) {
		t.Fatalf("ids = %v (%v)", ids, err)
	}
	half, err := g.Initializer("half").Floats()
	if err != nil || !reflect.DeepEqual(half, []float32{1.5, -0.25}) {
		t.Fatalf("half = %v (%v)", half, err)
	}
	n := g.Nodes[0]
	if m.Producer != "onnx-test" || m.Opsets[""] != 13 || n.OpType != "Gemm" || n.Attrs["alpha"].F != 0.5 || n.Attrs["transB"].I != 1 ||
		len(n.Inputs) != 3 || n.Inputs[2] != "" || g.Inputs[0].Shape[0].Param != "n" || g.Outputs[0].Shape[1].Value != 2 {
		t.Fatalf("model %+v", m)
	}
}

func TestONNXCorrupt(t *testing.T) {
	good := testmodel.EncodeONNX(sampleONNX())
	bad := sampleONNX()
	bad.Graph.Initializers[0].Data = bad.Graph.Initializers[0].Data[:8]
	for name, b := range map[string][]byte{
		"empty":        nil,
		"text":         []byte("{\"not\": \"onnx\"}"),
		"truncated":    good[:len(good)/2],
		"short tensor": testmodel.EncodeONNX(bad),
		"gguf":         []byte("GGUF\x03\x00\x00\x00"),
	} {
		if _, err := models.ParseONNX(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func FuzzParseONNX(f *testing.F) {
	f.Add(testmodel.EncodeONNX(sampleONNX()))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := models.ParseONNX(b)
		if err != nil {
			return
		}
		models.FindPiperWeights(&m.Graph) // any graph: an answer, never a panic
		for _, init := range m.Graph.Initializers {
			if init.DataType == models.ONNXFloat {
				if _, err := init.Floats(); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}
