package audio

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// speakerChild marks the process that plays (ALSA reads its configuration
// once per process; see micChild).
const speakerChild = "OWL_TEST_SPEAKER_CHILD"

// TestSpeakerPlayback plays a tone through portaudio into ALSA's file
// plugin, which writes what the device is given into a raw file over a null
// card: the file must hold the tone, resampled from 22,050 Hz to the
// device's rate, whole.
func TestSpeakerPlayback(t *testing.T) {
	if os.Getenv(speakerChild) != "" {
		speakerPlay(t)
		return
	}
	home := t.TempDir()
	out := filepath.Join(home, "played.raw")
	rc := `pcm.owltestspk {
	type file
	slave.pcm "null"
	file "` + out + `"
	format "raw"
	hint { show on description "owl test speaker" }
}
`
	if err := os.WriteFile(filepath.Join(home, ".asoundrc"), []byte(rc), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSpeakerPlayback$", "-test.v")
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, speakerChild+"=1")
	log, err := cmd.CombinedOutput()
	t.Logf("playback:\n%s", log)
	if err != nil {
		t.Fatalf("playback failed: %v", err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// The plugin writes the device's frames: float32, mono, at the rate the
	// child printed (portaudio's default for ALSA plugins, 44.1 kHz).
	const rate = 44100
	got := make([]float64, len(raw)/4)
	for i := range got {
		got[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
	}
	// One second of tone at 22.05 kHz plays as one second at the device's
	// rate (with the resampler's tail and the last period's padding).
	if s := float64(len(got)) / rate; s < 0.99 || s > 1.2 {
		t.Fatalf("the device was given %.3f s of audio, want 1 s", s)
	}
	seg := got[rate/4 : rate/4+rate/8]
	var ss, sc, cc, ys, yc float64
	for i, y := range seg {
		s, c := math.Sincos(2 * math.Pi * 1000 * float64(i) / rate)
		ss, sc, cc, ys, yc = ss+s*s, sc+s*c, cc+c*c, ys+y*s, yc+y*c
	}
	det := ss*cc - sc*sc
	a, b := (ys*cc-yc*sc)/det, (yc*ss-ys*sc)/det
	sig, noise := 0.0, 0.0
	for i, y := range seg {
		s, c := math.Sincos(2 * math.Pi * 1000 * float64(i) / rate)
		fit := a*s + b*c
		sig += fit * fit
		noise += (y - fit) * (y - fit)
	}
	amp := math.Hypot(a, b)
	t.Logf("tone amplitude %.3f, residual %.2g of it", amp, math.Sqrt(noise/sig))
	if math.Abs(amp-0.5) > 0.02 || noise > 1e-4*sig {
		t.Fatalf("played tone amplitude %.3f (want 0.5), residual %.2g", amp, math.Sqrt(noise/sig))
	}
}

func speakerPlay(t *testing.T) {
	devs, err := OutputDevices()
	if err != nil {
		t.Fatal(err)
	}
	index := -1
	for i, d := range devs {
		if d.Name == "owltestspk" {
			index = d.Index
			t.Logf("device %d: %+v", i, d)
		}
	}
	if index < 0 {
		t.Fatalf("the ALSA test device is not listed: %+v", devs)
	}
	sp, err := OpenSpeaker(index, 22050)
	if err != nil {
		t.Fatal(err)
	}
	tone := make([]float32, 22050)
	for i := range tone {
		tone[i] = float32(0.5 * math.Sin(2*math.Pi*1000*float64(i)/22050))
	}
	for i := 0; i < len(tone); i += 4000 {
		if err := sp.Play(context.Background(), tone[i:min(i+4000, len(tone))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
}
