package audio

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"testing"
)

// wav builds a WAV file with the given format fields around data.
func wav(format, channels, rate, bits int, data []byte) []byte {
	le := binary.LittleEndian
	var b []byte
	b = append(b, "RIFF"...)
	b = le.AppendUint32(b, uint32(36+len(data)))
	b = append(b, "WAVEfmt "...)
	b = le.AppendUint32(b, 16)
	b = le.AppendUint16(b, uint16(format))
	b = le.AppendUint16(b, uint16(channels))
	b = le.AppendUint32(b, uint32(rate))
	b = le.AppendUint32(b, uint32(rate*channels*bits/8))
	b = le.AppendUint16(b, uint16(channels*bits/8))
	b = le.AppendUint16(b, uint16(bits))
	b = append(b, "data"...)
	b = le.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func decode(b []byte) (Audio, error) { return DecodeWAV(bytes.NewReader(b), int64(len(b)), Limits{}) }

func TestDecodeWAVFormats(t *testing.T) {
	le := binary.LittleEndian
	want := []float64{0, 0.5, -0.5, 0.25}
	var p16, p24, p32, f32, f64, p8 []byte
	for _, v := range want {
		p16 = le.AppendUint16(p16, uint16(int16(v*32768)))
		i24 := int32(v * 8388608)
		p24 = append(p24, byte(i24), byte(i24>>8), byte(i24>>16))
		p32 = le.AppendUint32(p32, uint32(int32(v*2147483648)))
		f32 = le.AppendUint32(f32, math.Float32bits(float32(v)))
		f64 = le.AppendUint64(f64, math.Float64bits(v))
		p8 = append(p8, byte(v*128+128))
	}
	for name, b := range map[string][]byte{
		"pcm8": wav(1, 1, 16000, 8, p8), "pcm16": wav(1, 1, 16000, 16, p16), "pcm24": wav(1, 1, 16000, 24, p24),
		"pcm32": wav(1, 1, 16000, 32, p32), "float32": wav(3, 1, 16000, 32, f32), "float64": wav(3, 1, 16000, 64, f64),
	} {
		a, err := decode(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(a.Samples) != len(want) || a.SampleRate != 16000 {
			t.Fatalf("%s: %d samples at %d Hz", name, len(a.Samples), a.SampleRate)
		}
		for i, v := range want {
			if math.Abs(float64(a.Samples[i])-v) > 1.0/120 {
				t.Fatalf("%s: sample %d = %v, want %v", name, i, a.Samples[i], v)
			}
		}
	}
	// Stereo is averaged to mono.
	var st []byte
	for _, v := range [][2]int16{{1000, 3000}, {-2000, 0}} {
		st = le.AppendUint16(st, uint16(v[0]))
		st = le.AppendUint16(st, uint16(v[1]))
	}
	a, err := decode(wav(1, 2, 16000, 16, st))
	if err != nil || len(a.Samples) != 2 || a.Channels != 2 || math.Abs(float64(a.Samples[0])-2000.0/32768) > 1e-6 {
		t.Fatalf("stereo: %+v %v", a, err)
	}
}

func TestDecodeWAVErrors(t *testing.T) {
	good := wav(1, 1, 16000, 16, make([]byte, 100))
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "not a WAV"},
		{"not riff", []byte("OggS and more bytes here"), "not a WAV"},
		{"zero channels", wav(1, 0, 16000, 16, make([]byte, 10)), "0 channels"},
		{"absurd rate", wav(1, 1, 5, 16, make([]byte, 10)), "sample rate 5"},
		{"unsupported", wav(2, 1, 16000, 4, make([]byte, 10)), "unsupported encoding"},
		{"no data", good[:36], "no data chunk"},
		{"ten hours", wav(1, 1, 16000, 16, nil)[:40], "no data chunk"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decode(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	// A header claiming ten hours over a short file decodes what is there.
	long := wav(1, 1, 16000, 16, make([]byte, 200))
	binary.LittleEndian.PutUint32(long[40:], 16000*2*36000)
	a, err := decode(long)
	if err != nil || len(a.Samples) != 100 {
		t.Fatalf("over-long data size: %d samples, %v", len(a.Samples), err)
	}
	// A real ten-hour file is refused against the limit before allocating.
	_, err = DecodeWAV(bytes.NewReader(long), int64(16000*2*36000+44), Limits{MaxDuration: 3600})
	if err == nil || !strings.Contains(err.Error(), "exceeds the limit") {
		t.Fatalf("ten hours: %v", err)
	}
}

func FuzzDecodeWAV(f *testing.F) {
	f.Add(wav(1, 1, 16000, 16, make([]byte, 64)))
	f.Add(wav(3, 2, 44100, 32, make([]byte, 64)))
	f.Add(wav(1, 1, 16000, 24, make([]byte, 30)))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeWAV(bytes.NewReader(b), int64(len(b)), Limits{MaxDuration: 60})
		if err != nil {
			return
		}
		if len(a.Samples) > len(b) {
			t.Fatalf("%d samples from %d bytes", len(a.Samples), len(b))
		}
		for _, s := range a.Samples {
			if math.IsNaN(float64(s)) {
				t.Fatal("NaN sample")
			}
		}
	})
}

// EncodeWAV writes 16-bit files that decode to the samples, clipped.
func TestEncodeWAV(t *testing.T) {
	in := []float32{0, 0.5, -0.5, 1, -1, 2, -3}
	b := EncodeWAV(in, 16000)
	a, err := DecodeWAV(bytes.NewReader(b), int64(len(b)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if a.SampleRate != 16000 || len(a.Samples) != len(in) {
		t.Fatalf("%d Hz, %d samples", a.SampleRate, len(a.Samples))
	}
	for i, v := range in {
		want := max(-1, min(1, float64(v)))
		if d := float64(a.Samples[i]) - want; d > 1e-4 || d < -1e-4 {
			t.Fatalf("sample %d: %v, want %v", i, a.Samples[i], want)
		}
	}
}
