package models_test

import (
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

// The weights of a voice laid out as Piper's export lays them out are all
// found, under their state_dict names, with the values written — the
// embedding stored as "sid", the anonymous flow convolutions, the folded
// duration scale — and the sizes are read back from the shapes and the
// convolution attributes.
func TestFindPiperWeights(t *testing.T) {
	for _, c := range []testmodel.PiperConfig{testmodel.PiperSmall(), testmodel.PiperMedium()} {
		m, err := models.ParseONNX(testmodel.EncodeONNX(testmodel.PiperONNX(c)))
		if err != nil {
			t.Fatal(err)
		}
		if m.Graph.Initializer("sid") == nil || m.Graph.Initializer("enc_p.emb.weight") != nil {
			t.Fatal("the generated voice does not store the embedding as the export does")
		}
		v, err := models.FindPiperWeights(&m.Graph)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(v.HParams, c.HParams) {
			t.Fatalf("sizes %+v\nwant  %+v", v.HParams, c.HParams)
		}
		if v.HParams.HopLength() != 256 {
			t.Fatalf("hop %d", v.HParams.HopLength())
		}
		want, _ := testmodel.PiperWeights(c)
		if len(v.Weights) != len(want) {
			t.Fatalf("%d weights, want %d", len(v.Weights), len(want))
		}
		for name, w := range want {
			got, err := v.Weights[name].Floats()
			if err != nil {
				t.Fatal(err)
			}
			tol := 0.0
			if name == "dp.flows.0.logs" {
				tol = 1e-6 // through exp(−logs) and back
			}
			for i := range w {
				if math.Abs(float64(got[i]-w[i])) > tol {
					t.Fatalf("%s[%d] = %v, want %v", name, i, got[i], w[i])
				}
			}
		}
	}
}

func TestFindPiperWeightsRefuses(t *testing.T) {
	c := testmodel.PiperSmall()
	if _, err := models.FindPiperWeights(&sampleONNX().Graph); !errors.Is(err, models.ErrNotPiper) {
		t.Fatalf("a graph that is no voice: %v", err)
	}
	m := testmodel.PiperONNX(c)
	m.Graph.Initializers = slices.DeleteFunc(m.Graph.Initializers, func(t models.ONNXTensor) bool { return t.Name == "dec.resblocks.4.convs.1.weight" })
	if _, err := models.FindPiperWeights(&m.Graph); !errors.Is(err, models.ErrNotPiper) || !strings.Contains(err.Error(), "dec.resblocks.4.convs.1.weight") {
		t.Fatalf("a missing weight: %v", err)
	}
	m = testmodel.PiperONNX(c)
	for i := range m.Graph.Initializers {
		if m.Graph.Initializers[i].Name == "enc_p.proj.bias" {
			m.Graph.Initializers[i] = testmodel.FloatTensor("enc_p.proj.bias", []int64{7}, make([]float32, 7))
		}
	}
	if _, err := models.FindPiperWeights(&m.Graph); !errors.Is(err, models.ErrNotPiper) || !strings.Contains(err.Error(), "enc_p.proj.bias") {
		t.Fatalf("a wrong shape: %v", err)
	}
}
