package audio

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
)

// Each format decodes (through owl's own readers, and for WAV and FLAC
// through the format's library) to the samples written, at the rate given.
func TestWritersRoundTrip(t *testing.T) {
	const rate = 22050
	in := make([]float32, rate+1234)
	for i := range in {
		in[i] = float32(0.6 * math.Sin(2*math.Pi*440*float64(i)/rate))
	}
	for _, format := range EncodeFormats {
		var b bytes.Buffer
		w, err := NewWriter(&b, format, rate)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(in); i += 5000 { // in pieces, as a stream comes
			if err := w.Write(in[i:min(i+5000, len(in))]); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		var got []float32
		switch format {
		case "pcm":
			for i := 0; i+1 < b.Len(); i += 2 {
				got = append(got, float32(int16(binary.LittleEndian.Uint16(b.Bytes()[i:])))/32768)
			}
		default:
			a, err := Decode(bytes.NewReader(b.Bytes()), int64(b.Len()), Limits{})
			if err != nil {
				t.Fatalf("%s: %v", format, err)
			}
			if a.SampleRate != rate {
				t.Fatalf("%s: %d Hz", format, a.SampleRate)
			}
			got = a.Samples
		}
		if len(got) != len(in) {
			t.Fatalf("%s: %d samples, wrote %d", format, len(got), len(in))
		}
		for i := range in {
			if math.Abs(float64(got[i]-in[i])) > 1.0/16384 {
				t.Fatalf("%s: sample %d is %v, wrote %v", format, i, got[i], in[i])
			}
		}
	}
	if _, err := NewWriter(&bytes.Buffer{}, "mp3", rate); err == nil {
		t.Fatal("mp3 accepted")
	}
}
