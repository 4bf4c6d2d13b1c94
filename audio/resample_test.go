package audio

import (
	"math"
	"testing"
)

func tone(rate int, freq float64, seconds float64) []float32 {
	out := make([]float32, int(float64(rate)*seconds))
	for i := range out {
		out[i] = float32(0.5 * math.Sin(2*math.Pi*freq*float64(i)/float64(rate)))
	}
	return out
}

// A 1-kHz sine resampled from 44.1 to 16 kHz matches the ideal sine at
// 16 kHz with an SNR of at least 80 dB (edges aside).
func TestResampleSNR(t *testing.T) {
	for _, from := range []int{8000, 11025, 22050, 32000, 44100, 48000, 96000} {
		out, err := Resample(tone(from, 1000, 1), from, 16000)
		if err != nil {
			t.Fatal(err)
		}
		if want := 16000; math.Abs(float64(len(out)-want)) > 1 {
			t.Fatalf("%d Hz: %d samples, want %d", from, len(out), want)
		}
		sig, noise := 0.0, 0.0
		for i := 800; i < len(out)-800; i++ { // skip 50 ms at each edge
			ideal := 0.5 * math.Sin(2*math.Pi*1000*float64(i)/16000)
			sig += ideal * ideal
			d := float64(out[i]) - ideal
			noise += d * d
		}
		snr := 10 * math.Log10(sig/noise)
		t.Logf("%6d Hz → 16 kHz: SNR %.1f dB", from, snr)
		if snr < 80 {
			t.Errorf("%d Hz → 16 kHz: SNR %.1f dB, want ≥ 80", from, snr)
		}
	}
}

// A 12-kHz tone at 48 kHz is above the 8-kHz Nyquist frequency of the
// output: what is left after resampling to 16 kHz (aliased to 4 kHz) stays
// under -60 dB of the input.
func TestResampleAliasing(t *testing.T) {
	in := tone(48000, 12000, 1)
	out, err := Resample(in, 48000, 16000)
	if err != nil {
		t.Fatal(err)
	}
	pin, pout := 0.0, 0.0
	for _, s := range in {
		pin += float64(s) * float64(s)
	}
	pin /= float64(len(in))
	for _, s := range out[800 : len(out)-800] {
		pout += float64(s) * float64(s)
	}
	pout /= float64(len(out) - 1600)
	db := 10 * math.Log10(pout/pin)
	t.Logf("aliased energy %.1f dB", db)
	if db > -60 {
		t.Fatalf("aliased energy %.1f dB, want ≤ -60", db)
	}
}

// Feeding the resampler in pieces gives exactly what one call gives.
func TestResampleStreaming(t *testing.T) {
	in := tone(44100, 440, 0.5)
	whole, _ := Resample(in, 44100, 16000)
	r, _ := NewResampler(44100, 16000)
	var got []float32
	for i := 0; i < len(in); {
		n := min(len(in)-i, 1+i%997)
		got = append(got, r.Write(in[i:i+n])...)
		i += n
	}
	got = append(got, r.Flush()...)
	if len(got) != len(whole) {
		t.Fatalf("%d samples streamed, %d at once", len(got), len(whole))
	}
	for i := range got {
		if got[i] != whole[i] {
			t.Fatalf("sample %d: %v streamed, %v at once", i, got[i], whole[i])
		}
	}
}

func TestResampleRates(t *testing.T) {
	if _, err := NewResampler(5, 16000); err == nil {
		t.Fatal("5 Hz accepted")
	}
	same, _ := Resample([]float32{1, 2, 3}, 16000, 16000)
	if len(same) != 3 {
		t.Fatal("same rate changed the samples")
	}
}

func BenchmarkResample(b *testing.B) {
	in := tone(44100, 440, 1)
	b.ReportAllocs()
	for b.Loop() {
		Resample(in, 44100, 16000)
	}
}
