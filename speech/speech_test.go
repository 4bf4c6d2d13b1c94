package speech

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

var (
	modelsOnce sync.Once
	modelDir   string
)

// modelPath writes a generated model once per test binary.
func modelPath(t testing.TB, name string, c testmodel.WhisperConfig) string {
	t.Helper()
	modelsOnce.Do(func() {
		d, err := os.MkdirTemp("", "owl-speech-test")
		if err != nil {
			panic(err)
		}
		modelDir = d
	})
	p := filepath.Join(modelDir, name+".bin")
	if _, err := os.Stat(p); err != nil {
		if err := testmodel.WriteWhisperFile(p, c); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func loadModel(t testing.TB, name string, c testmodel.WhisperConfig, o LoadOptions) *Model {
	t.Helper()
	if o.Threads == 0 {
		o.Threads = 2
	}
	path := modelPath(t, name, c) // sets modelDir
	o.CacheDir = filepath.Join(modelDir, "cache")
	m, err := Load(context.Background(), path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func jfk(t testing.TB) []float32 {
	t.Helper()
	p, err := testmodel.Sample("jfk.wav")
	if err != nil {
		t.Fatal(err)
	}
	a, err := audio.DecodeFile(p, audio.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if a.SampleRate != SampleRate {
		t.Fatalf("jfk.wav is %d Hz", a.SampleRate)
	}
	return a.Samples
}

func tokenIDs(tr *Transcript) []int {
	var ids []int
	for _, s := range tr.Segments {
		for _, tok := range s.Tokens {
			ids = append(ids, tok.ID)
		}
	}
	return ids
}

var greedyOnly = Options{BeamSize: 1, Temperatures: []float64{0}}

func TestJFKDeterministic(t *testing.T) {
	m := loadModel(t, "tiny.en-f16", testmodel.WhisperTiny(testmodel.VocabEnglish, 1), LoadOptions{})
	samples := jfk(t)
	a, err := m.Transcribe(context.Background(), samples, greedyOnly)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Transcribe(context.Background(), samples, greedyOnly)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Segments) == 0 || a.Timings.Tokens == 0 {
		t.Fatalf("no output: %+v", a.Timings)
	}
	if !slices.Equal(tokenIDs(a), tokenIDs(b)) || a.Text() != b.Text() {
		t.Fatalf("two greedy transcriptions differ:\n%q\n%q", a.Text(), b.Text())
	}
	for _, s := range a.Segments {
		if s.End < s.Start || s.Start < 0 || s.End > a.Duration+30e9 {
			t.Fatalf("segment [%v, %v] out of order", s.Start, s.End)
		}
		for _, tok := range s.Tokens {
			if tok.Prob <= 0 || tok.Prob > 1 || math.IsNaN(float64(tok.Prob)) {
				t.Fatalf("token %+v has probability %v", tok, tok.Prob)
			}
		}
	}
}

// An f16 file holds the f32 file's weights rounded to 11 significant bits,
// and ggml also rounds the activations that meet f16 weights to f16, so each
// product carries a relative error of about 2^-11 ≈ 5e-4; the errors of the
// layers partly cancel (measured: 4e-4 of the logits' scale for the micro
// model). 4e-3 leaves ten times that while staying far below what a wrong
// weight layout or type causes (order 1, see TestOracle).
func TestF16MatchesF32(t *testing.T) {
	f32 := loadModel(t, "micro-f32", testmodel.WhisperMicro(testmodel.VocabMultilingual, 0), LoadOptions{})
	f16 := loadModel(t, "micro-f16", testmodel.WhisperMicro(testmodel.VocabMultilingual, 1), LoadOptions{})
	e := relErr(probeLogits(t, f16), widen(probeLogits(t, f32)))
	t.Logf("f16 vs f32 logits: relative error %.2g", e)
	if e > 4e-3 {
		t.Fatalf("f16 logits differ from f32 by %.2g of their scale", e)
	}
}

// probeLogits encodes a fixed 3-second signal and returns the logits after
// the start-of-transcript prompt and two text tokens.
func probeLogits(t testing.TB, m *Model) []float32 {
	t.Helper()
	mel := LogMel(testAudio(), m.file.MelFilters, m.hp.NMels, 2)
	w := make([]float32, m.hp.NMels*WindowFrames)
	mel.Window(w, 0)
	st, err := m.newState(1)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	if err := m.encode(w, st, nil); err != nil {
		t.Fatal(err)
	}
	p, _, _ := m.sotSequence(Options{})
	l, err := m.decode(st, append(p, 500, 600))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func widen(a []float32) []float64 {
	out := make([]float64, len(a))
	for i, v := range a {
		out[i] = float64(v)
	}
	return out
}

func TestEmptyAndSilence(t *testing.T) {
	m := loadModel(t, "micro.en-f16", testmodel.WhisperMicro(testmodel.VocabEnglish, 1), LoadOptions{})
	for name, samples := range map[string][]float32{
		"zero length":     nil,
		"one sample":      {0},
		"10 s of silence": make([]float32, 10*SampleRate),
		"45 s of silence": make([]float32, 45*SampleRate),
		"faint hiss":      noise(20*SampleRate, 3e-4),
	} {
		t.Run(name, func(t *testing.T) {
			tr, err := m.Transcribe(context.Background(), samples, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(tr.Segments) != 0 || tr.Timings.Windows != 0 {
				t.Fatalf("silence gave %d segments after %d windows", len(tr.Segments), tr.Timings.Windows)
			}
		})
	}
}

func TestBadOptions(t *testing.T) {
	en := loadModel(t, "micro.en-f16", testmodel.WhisperMicro(testmodel.VocabEnglish, 1), LoadOptions{})
	multi := loadModel(t, "micro-f16", testmodel.WhisperMicro(testmodel.VocabMultilingual, 1), LoadOptions{})
	for _, tc := range []struct {
		m    *Model
		o    Options
		want string
	}{
		{en, Options{Translate: true}, "cannot translate"},
		{en, Options{Language: "de"}, "English-only"},
		{multi, Options{Language: "xx"}, "unknown language"},
		{multi, Options{Language: "yue"}, "unknown language"}, // 99-language models lack Cantonese
	} {
		_, err := tc.m.Transcribe(context.Background(), []float32{0.1}, tc.o)
		if !errors.Is(err, ErrBadOption) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.o, err, tc.want)
		}
	}
	// Languages are accepted by code or name on multilingual models.
	for _, lang := range []string{"de", "German", "french"} {
		if _, _, err := multi.sotSequence(Options{Language: lang}); err != nil {
			t.Errorf("%s: %v", lang, err)
		}
	}
}

func TestPrompt(t *testing.T) {
	multi := loadModel(t, "micro-f16", testmodel.WhisperMicro(testmodel.VocabMultilingual, 1), LoadOptions{})
	s := multi.vocab.Special()
	p, lang, err := multi.sotSequence(Options{Language: "de", Translate: true, NoTimestamps: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []int32{int32(s.SOT), int32(s.LanguageBegin + 2), int32(s.Translate), int32(s.NoTimestamps)}
	if !slices.Equal(p, want) || lang != "de" {
		t.Fatalf("prompt %v (%s), want %v", p, lang, want)
	}
}

func TestCancel(t *testing.T) {
	m := loadModel(t, "micro.en-f16", testmodel.WhisperMicro(testmodel.VocabEnglish, 1), LoadOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Transcribe(ctx, testAudio(), Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestCorruptModelFiles(t *testing.T) {
	good, err := os.ReadFile(modelPath(t, "micro.en-f16", testmodel.WhisperMicro(testmodel.VocabEnglish, 1)))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"empty":     nil,
		"truncated": good[:len(good)/2],
		"text":      []byte("hello"),
	} {
		p := filepath.Join(dir, name+".bin")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(context.Background(), p, LoadOptions{CacheDir: dir})
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err = %v", name, err)
		}
		if !errors.Is(err, models.ErrCorrupt) && !errors.Is(err, models.ErrNotWhisper) {
			t.Errorf("%s: %v is not a model-file error", name, err)
		}
	}
}

func testmodelMicroMulti() testmodel.WhisperConfig {
	return testmodel.WhisperMicro(testmodel.VocabMultilingual, 1)
}

// noise is deterministic white noise of the given RMS level.
func noise(n int, level float64) []float32 {
	out := make([]float32, n)
	seed := uint64(3)
	for i := range out {
		seed = seed*6364136223846793005 + 1442695040888963407
		out[i] = float32(level * math.Sqrt(3) * (2*float64(seed>>40)/float64(1<<24) - 1))
	}
	return out
}

// longAudio is 75 seconds of tones and noise: three windows.
func longAudio() []float32 {
	base := testAudio()
	out := make([]float32, 0, 75*SampleRate)
	for len(out) < 75*SampleRate {
		out = append(out, base...)
	}
	return out[:75*SampleRate]
}

// Over several windows, segments come in order without overlap, within the
// audio, and each window's timestamps never decrease.
func TestMultiWindowSegments(t *testing.T) {
	m := loadModel(t, "micro.en-f16", testmodel.WhisperMicro(testmodel.VocabEnglish, 1), LoadOptions{})
	var progress []time.Duration
	var total time.Duration
	o := greedyOnly
	o.OnProgress = func(done, t time.Duration) { progress, total = append(progress, done), t }
	tr, err := m.Transcribe(context.Background(), longAudio(), o)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Timings.Windows < 3 {
		t.Fatalf("%d windows for 75 s", tr.Timings.Windows)
	}
	ts := m.vocab.Special().TimestampBegin
	var prevEnd time.Duration
	for i, s := range tr.Segments {
		if s.Start < prevEnd || s.End < s.Start || s.End > tr.Duration+time.Second {
			t.Fatalf("segment %d [%v, %v] after one ending at %v (audio %v)", i, s.Start, s.End, prevEnd, tr.Duration)
		}
		prevEnd = s.End
		last := -1
		for _, tok := range s.Tokens {
			if tok.ID >= ts {
				if tok.ID < last {
					t.Fatalf("segment %d: timestamp %s after %s", i, m.vocab.Name(tok.ID), m.vocab.Name(last))
				}
				last = tok.ID
			}
		}
	}
	if !slices.IsSorted(progress) || progress[len(progress)-1] != total || total < 74*time.Second {
		t.Fatalf("progress %v of %v", progress, total)
	}
}

func TestLanguageDetection(t *testing.T) {
	m := loadModel(t, "micro-f16", testmodelMicroMulti(), LoadOptions{})
	tr, err := m.Transcribe(context.Background(), testAudio(), greedyOnly)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.LanguageProbs) != 99 {
		t.Fatalf("%d language probabilities", len(tr.LanguageProbs))
	}
	sum, best := 0.0, ""
	for code, p := range tr.LanguageProbs {
		sum += p
		if best == "" || p > tr.LanguageProbs[best] {
			best = code
		}
	}
	if math.Abs(sum-1) > 1e-4 || tr.Language != best || tr.LanguageProb != tr.LanguageProbs[best] {
		t.Fatalf("language %s (%.3f), best %s, probabilities sum to %v", tr.Language, tr.LanguageProb, best, sum)
	}
	// An explicit language is not detected.
	o := greedyOnly
	o.Language = "fr"
	tr, err = m.Transcribe(context.Background(), testAudio(), o)
	if err != nil || tr.Language != "fr" || tr.LanguageProbs != nil {
		t.Fatalf("explicit language: %v %s %v", err, tr.Language, tr.LanguageProbs)
	}
}

func TestPromptLimits(t *testing.T) {
	m := loadModel(t, "micro.en-f16", testmodel.WhisperMicro(testmodel.VocabEnglish, 1), LoadOptions{})
	long := strings.Repeat("word ", 400)
	if _, err := m.Transcribe(context.Background(), testAudio(), Options{Prompt: long}); !errors.Is(err, ErrBadOption) {
		t.Fatalf("a %d-word prompt: %v", 400, err)
	}
	o := greedyOnly
	o.Prompt = "Ask not what your country can do for you"
	if _, err := m.Transcribe(context.Background(), testAudio(), o); err != nil {
		t.Fatal(err)
	}
}

func TestWordTimestamps(t *testing.T) {
	m := loadModel(t, "micro.en-f16", testmodel.WhisperMicro(testmodel.VocabEnglish, 1), LoadOptions{})
	o := greedyOnly
	o.WordTimestamps = true
	tr, err := m.Transcribe(context.Background(), testAudio(), o)
	if err != nil {
		t.Fatal(err)
	}
	words := 0
	for _, s := range tr.Segments {
		var prev time.Duration
		for _, w := range s.Words {
			words++
			if w.Start < prev || w.End < w.Start || w.End > tr.Duration+30*time.Second || w.Prob <= 0 || w.Prob > 1 {
				t.Fatalf("word %+v after %v", w, prev)
			}
			prev = w.Start
		}
	}
	if words == 0 {
		t.Skip("the random model produced no words")
	}
}

// With a VAD, only speech is decoded and times stay those of the original
// audio: every segment lies within a tone burst.
func TestTranscribeWithVAD(t *testing.T) {
	m := loadModel(t, "micro.en-f16", testmodel.WhisperMicro(testmodel.VocabEnglish, 1), LoadOptions{})
	tone := testAudio() // 3 s
	samples := make([]float32, 0, 20*SampleRate)
	samples = append(samples, make([]float32, 4*SampleRate)...)
	samples = append(samples, tone...) // 4 s to 7 s
	samples = append(samples, make([]float32, 8*SampleRate)...)
	samples = append(samples, tone...) // 15 s to 18 s
	samples = append(samples, make([]float32, 2*SampleRate)...)
	o := greedyOnly
	o.VAD = audio.NewEnergyVAD()
	o.NoSpeechThreshold = 2 // keep whatever the random model says
	tr, err := m.Transcribe(context.Background(), samples, o)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Duration != 20*time.Second {
		t.Fatalf("duration %v", tr.Duration)
	}
	if len(tr.Segments) == 0 {
		t.Fatal("no segments")
	}
	in := func(d time.Duration) bool {
		s := d.Seconds()
		return s >= 3.9 && s <= 7.1 || s >= 14.9 && s <= 18.1
	}
	for _, s := range tr.Segments {
		if !in(s.Start) || !in(s.End) {
			t.Fatalf("segment [%v, %v] outside the speech", s.Start, s.End)
		}
	}
	// One window instead of one per 30 s of the original.
	if tr.Timings.Windows != 1 {
		t.Fatalf("%d windows for 6 s of speech", tr.Timings.Windows)
	}
}

// Hyper-parameters the reader accepts but no published model has (a
// shorter or longer audio context, a tiny text context, few mels, one
// head) load and transcribe, or are refused with an error: none reaches a
// native assertion (this test would die with the process).
func TestUnusualShapesNeverAbort(t *testing.T) {
	samples := testAudio()
	for _, c := range []struct {
		name string
		edit func(h *models.WhisperHParams)
	}{
		{"audio context 1000", func(h *models.WhisperHParams) { h.NAudioCtx = 1000 }},
		{"audio context 1501", func(h *models.WhisperHParams) { h.NAudioCtx = 1501 }},
		{"text context 8", func(h *models.WhisperHParams) { h.NTextCtx = 8 }},
		{"40 mels", func(h *models.WhisperHParams) { h.NMels = 40 }},
		{"one head", func(h *models.WhisperHParams) { h.NAudioHead, h.NTextHead = 1, 1 }},
		{"one layer", func(h *models.WhisperHParams) { h.NAudioLayer, h.NTextLayer = 1, 1 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testmodel.WhisperMicro(testmodel.VocabEnglish, 1)
			c.edit(&cfg.HParams)
			path := filepath.Join(t.TempDir(), "odd.bin")
			if err := testmodel.WriteWhisperFile(path, cfg); err != nil {
				t.Fatal(err)
			}
			m, err := Load(context.Background(), path, LoadOptions{Threads: 2, CacheDir: filepath.Join(t.TempDir(), "cache")})
			if err != nil {
				t.Logf("refused: %v", err)
				return
			}
			defer m.Close()
			for _, o := range []Options{greedyOnly, {BeamSize: 3, Temperatures: []float64{0}, MaxTokens: 8}, {WordTimestamps: true, MaxTokens: 8}} {
				tr, err := m.Transcribe(context.Background(), samples, o)
				if err != nil {
					t.Logf("%+v: %v", o, err)
					continue
				}
				t.Logf("%d segments", len(tr.Segments))
			}
		})
	}
}
