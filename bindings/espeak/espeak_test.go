package espeak

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func needCommand(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("espeak-ng"); err != nil {
		t.Fatal("the espeak-ng command is missing: run `make deps`")
	}
}

// sentences are the phonemizer's table: sentences in seven languages with
// commas, colons, questions, numbers and a word of another language.
var sentences = []struct{ voice, text string }{
	{"en-us", "Hello, world. How are you today? The owl sat in the old oak tree!"},
	{"en-us", "It costs $3.50: cheap; isn't it?"},
	{"en-gb", "Schedule a meeting with the team at 10 o'clock."},
	{"de", "Guten Morgen, wie geht es Ihnen? Ich heiße Anna."},
	{"fr", "Bonjour le monde. Où est la gare, s'il vous plaît?"},
	{"es", "¿Dónde está la biblioteca? Está cerca, a dos calles."},
	{"it", "Buongiorno a tutti: oggi è una bella giornata."},
	{"ru", "Привет, как дела? Это тест."},
	{"pt-br", "Olá, tudo bem? Eu gosto de café."},
}

// Phonemes equal what `espeak-ng -q --ipa -v VOICE TEXT` prints, one
// clause per line.
func TestPhonemizeMatchesCommand(t *testing.T) {
	needCommand(t)
	for _, s := range sentences {
		out, err := exec.Command("espeak-ng", "-q", "--ipa", "-v", s.voice, s.text).Output()
		if err != nil {
			t.Fatalf("espeak-ng: %v", err)
		}
		var want []string
		for line := range strings.Lines(string(out)) {
			if line = strings.TrimSpace(line); line != "" {
				want = append(want, line)
			}
		}
		clauses, err := Phonemize(s.voice, s.text)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		read := ""
		for _, c := range clauses {
			read += c.Text
			if p := strings.TrimSpace(c.Phonemes); p != "" {
				got = append(got, p)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s %q:\n got %q\nwant %q", s.voice, s.text, got, want)
		}
		if read != s.text {
			t.Errorf("%s: the clauses' texts join to %q", s.voice, read)
		}
	}
}

// readWAV returns the 16-bit samples and rate of a WAV espeak-ng wrote.
func readWAV(t *testing.T, path string) ([]int16, int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte("data"))
	if len(b) < 44 || string(b[:4]) != "RIFF" || i < 0 {
		t.Fatalf("%s is not a WAV file", path)
	}
	rate := int(binary.LittleEndian.Uint32(b[24:]))
	pcm := b[i+8:]
	out := make([]int16, len(pcm)/2)
	for j := range out {
		out[j] = int16(binary.LittleEndian.Uint16(pcm[2*j:]))
	}
	return out, rate
}

// synthCases are texts and settings for the comparison with the command.
var synthCases = []struct {
	text string
	p    Params
}{
	{"Hello, world. How are you today?", Params{}},
	{"Guten Morgen, wie geht es Ihnen?", Params{Voice: "de", Rate: 220, Pitch: 30}},
	{"Bonjour le monde.", Params{Voice: "fr", Rate: 120, Pitch: 70, Volume: 150, WordGap: 5}},
	{"[[h@'loU]] there", Params{Voice: "en-us"}},
	{"Schedule it.", Params{Voice: "en-gb"}},
}

// TestMain lets the test binary synthesize one case in a process of its
// own: OWL_ESPEAK_CASE=i writes the case's samples to OWL_ESPEAK_OUT.
func TestMain(m *testing.M) {
	if c := os.Getenv("OWL_ESPEAK_CASE"); c != "" {
		i, _ := strconv.Atoi(c)
		s, err := Synthesize(synthCases[i].text, synthCases[i].p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		b := make([]byte, 2*len(s))
		for j, v := range s {
			binary.LittleEndian.PutUint16(b[2*j:], uint16(v))
		}
		if err := os.WriteFile(os.Getenv("OWL_ESPEAK_OUT"), b, 0o644); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The built-in voice's samples equal the espeak-ng command's WAV for the
// same text and settings, each synthesized as the first of its process
// (espeak-ng carries state from one text to the next).
func TestSynthesizeMatchesCommand(t *testing.T) {
	needCommand(t)
	dir := t.TempDir()
	rate, err := SampleRate()
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range synthCases {
		wav := filepath.Join(dir, strconv.Itoa(i)+".wav")
		args := []string{"-w", wav}
		if tc.p.Voice != "" {
			args = append(args, "-v", tc.p.Voice)
		}
		for flag, v := range map[string]int{"-s": tc.p.Rate, "-p": tc.p.Pitch, "-a": tc.p.Volume, "-g": tc.p.WordGap} {
			if v != 0 {
				args = append(args, flag, strconv.Itoa(v))
			}
		}
		if out, err := exec.Command("espeak-ng", append(args, tc.text)...).CombinedOutput(); err != nil {
			t.Fatalf("espeak-ng %v: %v %s", args, err, out)
		}
		want, wantRate := readWAV(t, wav)
		raw := filepath.Join(dir, strconv.Itoa(i)+".raw")
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "OWL_ESPEAK_CASE="+strconv.Itoa(i), "OWL_ESPEAK_OUT="+raw)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("case %d: %v %s", i, err, out)
		}
		b, err := os.ReadFile(raw)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]int16, len(b)/2)
		for j := range got {
			got[j] = int16(binary.LittleEndian.Uint16(b[2*j:]))
		}
		if rate != wantRate || len(got) == 0 || !slices.Equal(got, want) {
			t.Errorf("%q %+v: %d samples at %d Hz, the command's %d at %d Hz", tc.text, tc.p, len(got), rate, len(want), wantRate)
		}
	}
}

func TestVoicesAndErrors(t *testing.T) {
	voices, err := Voices()
	if err != nil {
		t.Fatal(err)
	}
	langs := map[string]bool{}
	for _, v := range voices {
		for _, l := range v.Languages {
			langs[l] = true
		}
	}
	for _, l := range []string{"en-us", "de", "fr", "es", "ru", "cmn"} {
		if !langs[l] {
			t.Errorf("no voice for %s among %d", l, len(voices))
		}
	}
	if _, err := Synthesize("x", Params{Voice: "zzz"}); err == nil || !strings.Contains(err.Error(), "unknown espeak-ng voice") {
		t.Errorf("unknown voice: %v", err)
	}
	if _, err := Synthesize("x", Params{Rate: 9999}); err == nil {
		t.Error("rate 9999 accepted")
	}
	// NUL bytes and empty text neither crash nor hang.
	for _, text := range []string{"", "\x00", "a\x00b", strings.Repeat("ab ", 3000)} {
		if _, err := Synthesize(text, Params{}); err != nil {
			t.Errorf("%.20q: %v", text, err)
		}
		if _, err := Phonemize("en", text); err != nil {
			t.Errorf("%.20q: %v", text, err)
		}
	}
}

// Calls from many goroutines with different settings each get their own:
// every result is as long as its settings give alone (within 2%: the
// generator's carried state moves the end by a few samples), and the
// settings make lengths far apart.
func TestConcurrentSettings(t *testing.T) {
	want := map[string]int{}
	params := map[string]Params{"en": {}, "de": {Voice: "de", Rate: 300}, "fr": {Voice: "fr", Rate: 100}}
	for name, p := range params {
		s, err := Synthesize("one two three", p)
		if err != nil {
			t.Fatal(err)
		}
		want[name] = len(s)
	}
	var wg sync.WaitGroup
	for range 4 {
		for name, p := range params {
			wg.Go(func() {
				s, err := Synthesize("one two three", p)
				if err != nil || math.Abs(float64(len(s)-want[name])) > 0.02*float64(want[name]) {
					t.Errorf("%s: %d samples (%v), want about %d", name, len(s), err, want[name])
				}
			})
		}
	}
	wg.Wait()
}

func FuzzPhonemize(f *testing.F) {
	for _, s := range sentences {
		f.Add(s.voice, s.text)
	}
	f.Add("en", "[[h@'loU]] <speak>x</speak> \x00 ...,,,???")
	f.Fuzz(func(t *testing.T, voice, text string) {
		if len(text) > 4096 {
			return
		}
		clauses, err := Phonemize(voice, text)
		if err != nil {
			return
		}
		n := 0
		for _, c := range clauses {
			n += len(c.Text)
		}
		if n > len(text)+len(text)/maxWord+1 {
			t.Fatalf("clauses hold %d bytes of %d", n, len(text))
		}
	})
}
