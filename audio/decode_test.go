package audio

import (
	"bytes"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// tool runs a command-line tool that `make deps` installs.
func tool(t *testing.T, name string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is missing: run `make deps` (%v)", name, err)
	}
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// bestSNR aligns got to want (the encoder may add a delay) and returns the
// signal-to-noise ratio in dB at the best lag.
func bestSNR(want, got []float32, maxLag int) (float64, int) {
	best, bestLag := math.Inf(-1), 0
	for lag := 0; lag <= maxLag; lag++ {
		n := min(len(want), len(got)-lag)
		if n < len(want)/2 {
			break
		}
		sig, noise := 0.0, 0.0
		for i := 0; i < n; i++ {
			w, g := float64(want[i]), float64(got[i+lag])
			sig += w * w
			noise += (w - g) * (w - g)
		}
		if snr := 10 * math.Log10(sig/noise); snr > best {
			best, bestLag = snr, lag
		}
	}
	return best, bestLag
}

// Each format decodes to the samples of the WAV it was made from: FLAC
// exactly, MP3 and Vorbis within their loss.
func TestDecodeFormats(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.wav")
	tool(t, "sox", "-n", "-r", "44100", "-c", "2", "-b", "16", src, "synth", "2", "sine", "440", "sine", "660", "gain", "-6")
	ref, err := DecodeFile(src, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if ref.SampleRate != 44100 || ref.Channels != 2 || len(ref.Samples) != 88200 {
		t.Fatalf("reference: %d Hz, %d channels, %d samples", ref.SampleRate, ref.Channels, len(ref.Samples))
	}
	tool(t, "flac", "--silent", "-f", "-o", filepath.Join(dir, "a.flac"), src)
	tool(t, "lame", "--quiet", "-b", "192", src, filepath.Join(dir, "a.mp3"))
	tool(t, "oggenc", "--quiet", "-q", "6", "-o", filepath.Join(dir, "a.ogg"), src)
	tool(t, "sox", src, "-b", "24", filepath.Join(dir, "a24.wav"))
	tool(t, "sox", src, "-e", "floating-point", "-b", "32", filepath.Join(dir, "af.wav"))
	for _, tc := range []struct {
		file   string
		format Format
		minSNR float64
	}{
		{"a.flac", FormatFLAC, 90},
		{"a24.wav", FormatWAV, 90},
		{"af.wav", FormatWAV, 90},
		{"a.mp3", FormatMP3, 20},
		{"a.ogg", FormatVorbis, 20},
	} {
		t.Run(tc.file, func(t *testing.T) {
			p := filepath.Join(dir, tc.file)
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if f := Sniff(data[:min(len(data), 4096)]); f != tc.format {
				t.Fatalf("sniffed %q, want %q", f, tc.format)
			}
			// A misleading extension changes nothing: content decides.
			renamed := filepath.Join(dir, "renamed-"+tc.file+".txt")
			if err := os.WriteFile(renamed, data, 0o644); err != nil {
				t.Fatal(err)
			}
			a, err := DecodeFile(renamed, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if a.SampleRate != 44100 || a.Channels != 2 {
				t.Fatalf("%d Hz, %d channels", a.SampleRate, a.Channels)
			}
			snr, lag := bestSNR(ref.Samples, a.Samples, 3000)
			t.Logf("%s: %d samples, SNR %.1f dB at lag %d", tc.file, len(a.Samples), snr, lag)
			if snr < tc.minSNR {
				t.Fatalf("SNR %.1f dB, want ≥ %.0f", snr, tc.minSNR)
			}
		})
	}
}

func TestLoadResamples(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "a.flac")
	tool(t, "sox", "-n", "-r", "48000", "-c", "1", src, "synth", "1.5", "sine", "1000")
	s, err := Load(src, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(s) < 23990 || len(s) > 24010 {
		t.Fatalf("%d samples at 16 kHz for 1.5 s", len(s))
	}
}

func TestDecodeErrors(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.wav")
	tool(t, "sox", "-n", "-r", "16000", "-c", "1", "-b", "16", src, "synth", "1", "sine", "300")
	tool(t, "flac", "--silent", "-f", "-o", filepath.Join(dir, "a.flac"), src)
	tool(t, "lame", "--quiet", src, filepath.Join(dir, "a.mp3"))
	tool(t, "oggenc", "--quiet", "-o", filepath.Join(dir, "a.ogg"), src)
	tool(t, "opusenc", "--quiet", src, filepath.Join(dir, "a.opus"))
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not WAV"},
		{"text", []byte("hello, this is text"), "not WAV"},
		{"opus", read("a.opus"), "ogg/opus"},
		{"truncated flac header", read("a.flac")[:30], "flac"},
		{"truncated ogg", read("a.ogg")[:200], "vorbis"},
		{"flac header claiming 8 channels", eightFLACChannels(read("a.flac")), "channels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(bytes.NewReader(tc.data), int64(len(tc.data)), Limits{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if !errors.Is(err, ErrBadAudio) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrNotWAV) {
				t.Fatalf("%v is not an audio error", err)
			}
		})
	}
	// A limit on duration refuses long audio in every format.
	for _, name := range []string{"src.wav", "a.flac", "a.mp3", "a.ogg"} {
		data := read(name)
		_, err := Decode(bytes.NewReader(data), int64(len(data)), Limits{MaxDuration: 0.5})
		if err == nil || !strings.Contains(err.Error(), "limit") {
			t.Errorf("%s: %v, want the duration limit", name, err)
		}
	}
	if _, err := Decode(bytes.NewReader(nil), 5<<30, Limits{}); err == nil || !strings.Contains(err.Error(), "exceed") {
		t.Errorf("5 GiB: %v", err)
	}
}

// eightFLACChannels rewrites the STREAMINFO channel count of a mono file to
// 8, which its frames contradict.
func eightFLACChannels(b []byte) []byte {
	out := bytes.Clone(b)
	// STREAMINFO data starts at byte 8; after block sizes (4 bytes) and
	// frame sizes (6): sample rate (20 bits), channels-1 (3), bits-1 (5).
	out[8+12] |= 0x0E
	return out
}

func FuzzSniffDecode(f *testing.F) {
	f.Add([]byte("RIFF\x00\x00\x00\x00WAVEfmt "))
	f.Add([]byte("fLaC\x00\x00\x00\x22"))
	f.Add([]byte("OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01vorbis"))
	f.Add([]byte("ID3\x03\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x00"))
	f.Add([]byte{0xff, 0xfb, 0x90, 0x64, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		Sniff(b)
		a, err := Decode(bytes.NewReader(b), int64(len(b)), Limits{MaxDuration: 30})
		if err == nil && a.Duration() > 30.5 {
			t.Fatalf("%.1f s decoded past the 30-s limit", a.Duration())
		}
	})
}
