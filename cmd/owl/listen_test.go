package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/models/testmodel"
)

// spokenFile speaks phrases with espeak-ng, trims each to its sound,
// joins them with pause seconds of silence, writes a 16-kHz WAV and returns
// where each phrase is (seconds).
func spokenFile(t *testing.T, dir string, pause float64, phrases ...string) (string, [][2]float64) {
	t.Helper()
	if _, err := exec.LookPath("espeak-ng"); err != nil {
		t.Fatalf("espeak-ng is missing: run `make deps`")
	}
	var all []float32
	var regions [][2]float64
	all = append(all, make([]float32, int(pause*16000))...)
	for i, ph := range phrases {
		p := filepath.Join(dir, "phrase"+string(rune('a'+i))+".wav")
		if out, err := exec.Command("espeak-ng", "-w", p, ph).CombinedOutput(); err != nil {
			t.Fatalf("espeak-ng: %v %s", err, out)
		}
		s, err := audio.Load(p, audio.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		first, last := -1, -1
		for j, v := range s {
			if math.Abs(float64(v)) > 0.01 {
				if first < 0 {
					first = j
				}
				last = j
			}
		}
		s = s[first : last+1]
		start := float64(len(all)) / 16000
		all = append(all, s...)
		regions = append(regions, [2]float64{start, float64(len(all)) / 16000})
		all = append(all, make([]float32, int(pause*16000))...)
	}
	out := filepath.Join(dir, "spoken.wav")
	pcm := make([]int16, len(all))
	for i, v := range all {
		pcm[i] = int16(max(-1, min(1, v)) * 32767)
	}
	wavFile(t, out, pcm)
	_ = binary.LittleEndian
	return out, regions
}

// Live transcription of a recording with pauses, played in real time: one
// final event per phrase, lined up with it within 300 ms, with 30-s windows
// and with windows fitted to each utterance.
func TestListenFileRealtime(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("OWL_CACHE_DIR", filepath.Join(dir, "cache"))
	model := whisperModel(t, dir, "ggml-micro.en.bin", testmodel.WhisperMicro(testmodel.VocabEnglish, 1))
	wav, regions := spokenFile(t, dir, 1.2, "Hello there, how are you today", "The owl sat in the old oak tree", "Good night")
	for _, extra := range [][]string{nil, {"--audio-ctx", "fit"}} {
		t.Run(strings.Join(append([]string{"windows"}, extra...), " "), func(t *testing.T) {
			listenAligned(t, append([]string{"listen", "-m", model, "--file", wav, "--realtime", "--json", "-t", "2"}, extra...), regions)
		})
	}
}

func listenAligned(t *testing.T, args []string, regions [][2]float64) {
	cmd := exec.Command(owlBin, args...)
	cmd.Env = os.Environ()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var finals []jsonEvent
	partials := 0
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		var ev jsonEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("not a JSON event: %q", sc.Text())
		}
		switch ev.Type {
		case "final":
			finals = append(finals, ev)
		case "partial":
			partials++
		default:
			t.Fatalf("event type %q", ev.Type)
		}
	}
	if len(finals) != len(regions) {
		t.Fatalf("%d final events for %d phrases: %+v (regions %v)", len(finals), len(regions), finals, regions)
	}
	for i, f := range finals {
		r := regions[i]
		if math.Abs(f.Start-r[0]) > 0.3 || math.Abs(f.End-r[1]) > 0.3 {
			t.Errorf("phrase %d at [%.2f, %.2f] s, final event [%.2f, %.2f]", i, r[0], r[1], f.Start, f.End)
		}
		if f.Text == "" {
			t.Errorf("final event %d has no text", i)
		}
	}
	if partials == 0 {
		t.Error("no partial events during phrases of more than a second")
	}
}

func TestListenErrors(t *testing.T) {
	dir := t.TempDir()
	model := whisperModel(t, dir, "ggml-micro.en.bin", testmodel.WhisperMicro(testmodel.VocabEnglish, 1))
	audioFile := filepath.Join(dir, "a.wav")
	wavFile(t, audioFile, make([]int16, 1600))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"listen", "-m", model, "--file", model}, "unsupported audio format"},
		{[]string{"listen", "-m", model, "--realtime"}, "--realtime goes with --file"},
		{[]string{"listen", "-m", model, "--file", filepath.Join(dir, "none.wav")}, "no such file"},
		{[]string{"listen", "-m", model, "--vad", "magic"}, "--vad"},
		{[]string{"listen", "-m", model, "--file", audioFile, "--vad", "silero"}, "needs a model file"},
		{[]string{"listen", "-m", model, "--file", audioFile, "--vad-threshold", "1.5"}, "VAD threshold 1.5"},
		{[]string{"transcribe", "-m", model, audioFile, "--vad-min-speech", "-1s"}, "must not be negative"},
	} {
		r := owl(t, "", tc.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q", tc.args, r.code, r.stderr)
		}
	}
}

// Where the machine has no input device (as in CI), devices says so and
// listening to the microphone fails with a clear error.
func TestNoMicrophone(t *testing.T) {
	r := owl(t, "", "devices")
	if r.code != 0 {
		t.Fatalf("devices: exit %d %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "no audio input devices") {
		t.Skipf("this machine has input devices:\n%s", r.stdout)
	}
	dir := t.TempDir()
	model := whisperModel(t, dir, "ggml-micro.en.bin", testmodel.WhisperMicro(testmodel.VocabEnglish, 1))
	r = owl(t, "", "listen", "-m", model)
	if r.code == 0 || !strings.Contains(r.stderr, "no audio input device") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("listen without a microphone: exit %d, stderr %q", r.code, r.stderr)
	}
}
