package audio

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// micChild marks the process that captures: ALSA reads its configuration
// once per process, so the capture runs in a child whose HOME holds an
// .asoundrc defining a test device.
const micChild = "OWL_TEST_MIC_CHILD"

// TestMicCapture captures real audio through portaudio and ALSA: the test
// device is ALSA's file plugin, which hands capture streams the frames of a
// raw file (a 1-kHz tone here) over a null card. The samples travel the
// whole microphone path (portaudio callback, bounded queue, downmix,
// resampler to 16 kHz) and must come out as the tone.
func TestMicCapture(t *testing.T) {
	if os.Getenv(micChild) != "" {
		micCapture(t)
		return
	}
	home := t.TempDir()
	// Ten seconds of a stereo float32 tone at 44.1 kHz, the rate portaudio
	// reports for ALSA plugin devices.
	const rate, seconds = 44100, 10
	raw := make([]byte, 0, rate*seconds*8)
	for i := range rate * seconds {
		v := math.Float32bits(float32(0.5 * math.Sin(2*math.Pi*1000*float64(i)/rate)))
		raw = binary.LittleEndian.AppendUint32(raw, v)
		raw = binary.LittleEndian.AppendUint32(raw, v)
	}
	tonePath := filepath.Join(home, "tone.raw")
	if err := os.WriteFile(tonePath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	rc := `pcm.owltestmic {
	type file
	slave.pcm "null"
	file "/dev/null"
	infile "` + tonePath + `"
	format "raw"
	hint { show on description "owl test microphone" }
}
`
	if err := os.WriteFile(filepath.Join(home, ".asoundrc"), []byte(rc), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMicCapture$", "-test.v")
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, micChild+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("capture:\n%s", out)
	if err != nil {
		t.Fatalf("capture failed: %v", err)
	}
}

func micCapture(t *testing.T) {
	devs, err := InputDevices()
	if err != nil {
		t.Fatal(err)
	}
	index := -1
	for i, d := range devs {
		if d.Name == "owltestmic" {
			index = i
		}
	}
	if index < 0 {
		t.Fatalf("the ALSA test device is not listed: %+v", devs)
	}
	mic, err := OpenMic(index)
	if errors.Is(err, ErrNoDevice) {
		t.Fatalf("opening the test device: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer mic.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []float32
	for len(got) < SampleRate {
		b, err := mic.Read(ctx)
		if err != nil {
			t.Fatalf("after %d samples: %v", len(got), err)
		}
		got = append(got, b...)
	}
	t.Logf("captured %d samples at 16 kHz, %d dropped at the device rate", len(got), mic.Dropped())

	// Least-squares fit of a 1-kHz sine (any phase) to the middle of the
	// capture; the residual must be far below the tone. The device is not
	// paced (the null card has no clock), so it outruns the reader and
	// later buffers are dropped and counted; the first second fits in the
	// queue whole.
	seg := got[SampleRate/4 : SampleRate/4+SampleRate/8]
	var ss, sc, cc, ys, yc float64
	for i, y := range seg {
		s, c := math.Sincos(2 * math.Pi * 1000 * float64(i) / SampleRate)
		ss += s * s
		sc += s * c
		cc += c * c
		ys += float64(y) * s
		yc += float64(y) * c
	}
	det := ss*cc - sc*sc
	a, b := (ys*cc-yc*sc)/det, (yc*ss-ys*sc)/det
	sig, noise := 0.0, 0.0
	for i, y := range seg {
		s, c := math.Sincos(2 * math.Pi * 1000 * float64(i) / SampleRate)
		fit := a*s + b*c
		sig += fit * fit
		noise += (float64(y) - fit) * (float64(y) - fit)
	}
	amp := math.Hypot(a, b)
	snr := 10 * math.Log10(sig/noise)
	t.Logf("tone amplitude %.4f, SNR %.1f dB", amp, snr)
	if math.Abs(amp-0.5) > 0.01 || snr < 60 {
		t.Errorf("captured tone: amplitude %.4f (want 0.5), SNR %.1f dB", amp, snr)
	}
}
