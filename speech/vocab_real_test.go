package speech

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/owlengine/owl/models"
	"github.com/owlengine/owl/models/testmodel"
)

// whisperCppPrompts are prompts and the tokens whisper.cpp 1.9.3's
// whisper_tokenize gives for them with the real vocabularies: multilingual
// (every size shares it) and English-only.
var whisperCppPrompts = []struct {
	text           string
	multi, english []int32
}{
	{"And so my fellow Americans, ask not what your country can do for you.",
		[]int32{5289, 370, 452, 7177, 6280, 11, 1029, 406, 437, 428, 1941, 393, 360, 337, 291, 13},
		[]int32{1870, 523, 616, 5891, 3399, 11, 1265, 407, 644, 534, 1499, 460, 466, 329, 345, 13}},
	{" Hello world",
		[]int32{2425, 1002},
		[]int32{18435, 995}},
	{"I'm here, it's 42! We'll see; they'd've gone.",
		[]int32{40, 478, 510, 11, 309, 311, 14034, 0, 492, 603, 536, 26, 436, 1116, 600, 2780, 13},
		[]int32{40, 1101, 994, 11, 340, 338, 5433, 0, 775, 1183, 766, 26, 484, 1549, 1053, 3750, 13}},
	{"Dr. Smith paid $3,450.75 on 2024-03-15 at 10:30am.",
		[]int32{12274, 13, 8538, 4835, 1848, 18, 11, 48957, 13, 11901, 322, 45237, 12, 11592, 12, 5211, 412, 1266, 25, 3446, 335, 13},
		[]int32{6187, 13, 4176, 3432, 720, 18, 11, 17885, 13, 2425, 319, 48609, 12, 3070, 12, 1314, 379, 838, 25, 1270, 321, 13}},
	{"naïve café déjà vu, Straße und Übermaß",
		[]int32{629, 15487, 303, 15246, 526, 274, 526, 73, 1467, 9732, 11, 12875, 2536, 68, 674, 10713, 607, 1696, 2536},
		[]int32{2616, 26884, 303, 19945, 2634, 288, 2634, 73, 24247, 410, 84, 11, 15195, 39683, 68, 3318, 49363, 527, 2611, 39683}},
	{"Привет, как дела? Это тест.",
		[]int32{43971, 31259, 11, 3014, 46157, 30, 6684, 41699, 13},
		[]int32{21169, 18849, 38857, 16843, 20375, 11, 220, 31583, 16142, 31583, 220, 43666, 16843, 30143, 16142, 30, 220, 20375, 15166, 220, 20375, 16843, 21727, 20375, 13}},
	{"日本語の音声認識をテストします。",
		[]int32{27311, 31348, 2972, 18034, 32045, 22041, 43143, 5998, 22985, 40498, 17048, 1543},
		[]int32{5641, 31758, 24336, 43302, 22180, 30159, 33623, 16764}},
	{"مرحبا بالعالم",
		[]int32{29973, 5016, 3555, 995, 20666, 3615, 45340},
		[]int32{25405, 26897, 39848, 12919, 220, 39848, 23525, 44690, 23525, 25405}},
	{"Γειά σου Κόσμε",
		[]int32{6452, 3849, 43455, 19233, 41292, 9104},
		[]int32{30950, 29945, 220, 38392, 26517, 220, 38392, 34703, 30950}},
	{"🦉 owls say hoo-hoo!!  ",
		[]int32{34488, 82, 584, 30663, 12, 19069, 1432, 220, 220},
		[]int32{39610, 82, 910, 8169, 78, 12, 8873, 78, 3228, 220, 220}},
	{"  two  spaces and a\ttab",
		[]int32{220, 732, 220, 7673, 293, 257, 197, 1328, 65},
		[]int32{220, 734, 220, 9029, 290, 257, 197, 8658}},
	{"Oh!'s \"quoted\" (parens) [brackets] {braces} <angle>",
		[]int32{3756, 13840, 82, 503, 25016, 67, 1, 522, 2181, 694, 8, 542, 6198, 11984, 60, 10929, 6198, 887, 92, 2627, 7846, 29},
		[]int32{5812, 13679, 82, 366, 22708, 67, 1, 357, 11730, 82, 8, 685, 16057, 694, 1039, 60, 1391, 46565, 82, 92, 1279, 9248, 29}},
	{"tab\tbefore and newline-free line with 100% & #hash @at",
		[]int32{1328, 65, 197, 45301, 293, 777, 1889, 12, 10792, 1622, 365, 2319, 4, 3693, 3536, 12438, 71, 10428, 267},
		[]int32{8658, 197, 19052, 290, 649, 1370, 12, 5787, 1627, 351, 1802, 4, 1222, 1303, 17831, 2488, 265}},
}

// The real header, mel filters and vocabulary of every Whisper size, as
// whisper.cpp's repository ships them for its tests (no tensors).
func TestRealVocabularies(t *testing.T) {
	layers := map[string]int{"tiny": 4, "base": 6, "small": 12, "medium": 24, "large": 32}
	for _, size := range []string{"tiny", "base", "small", "medium", "large"} {
		for _, english := range []bool{false, true} {
			name := size
			if english {
				if size == "large" {
					continue
				}
				name += ".en"
			}
			t.Run(name, func(t *testing.T) {
				f, err := models.ReadWhisper(testmodel.RealFile(t, "whispercpp/for-tests-ggml-"+name+".bin"))
				if err != nil {
					t.Fatal(err)
				}
				h := f.HParams
				if !f.VocabOnly || h.NAudioLayer != layers[size] || h.NTextLayer != layers[size] || h.NMels != 80 || len(f.MelFilters) != 80*201 {
					t.Fatalf("vocabulary only %v, %d/%d layers, %d mels, %d filter values", f.VocabOnly, h.NAudioLayer, h.NTextLayer, h.NMels, len(f.MelFilters))
				}
				if h.SizeName() != size || h.Multilingual() == english || len(f.Vocab) != 50257 {
					t.Fatalf("%s, multilingual %v, %d stored tokens", h.SizeName(), h.Multilingual(), len(f.Vocab))
				}
				v := newVocab(f)
				sp := v.Special()
				// OpenAI's ids: <|endoftext|> 50256 (English) or 50257, then
				// <|startoftranscript|>, the languages, <|translate|> ...
				want := models.WhisperSpecialTokens{EOT: 50256, SOT: 50257, Translate: 50357, Transcribe: 50358, SOLM: 50359,
					Prev: 50360, NoSpeech: 50361, NoTimestamps: 50362, TimestampBegin: 50363, LanguageBegin: 50258}
				if !english {
					want = models.WhisperSpecialTokens{EOT: 50257, SOT: 50258, Translate: 50358, Transcribe: 50359, SOLM: 50360,
						Prev: 50361, NoSpeech: 50362, NoTimestamps: 50363, TimestampBegin: 50364, LanguageBegin: 50259}
				}
				if sp != want {
					t.Fatalf("special tokens %+v, want %+v", sp, want)
				}
				if english && string(f.Vocab[sp.EOT]) != "<|endoftext|>" || !english && len(f.Vocab[50256]) != 0 {
					t.Errorf("stored token 50256 is %q", f.Vocab[50256])
				}
				if !english && v.NumLanguages() != 99 {
					t.Errorf("%d languages, want 99", v.NumLanguages())
				}
				// Text round-trips where the vocabulary has tokens for its
				// characters. (The files store the byte tokens that are not
				// UTF-8 alone as U+FFFD, so a character without a token of
				// its own, like the owl emoji, is lost, as in whisper.cpp.)
				texts := []string{" And so my fellow Americans", " naïve café, Straße", "\ttabs\nand  spaces ", " 42 owls!"}
				if !english {
					texts = append(texts, " Привет, мир", " 日本語の音声", " مرحبا", " Γειά σου", " 안녕하세요", " नमस्ते")
				}
				for _, text := range texts {
					toks := v.Encode(text)
					ids := make([]int, len(toks))
					for i, tok := range toks {
						ids[i] = int(tok)
						if !v.IsText(ids[i]) {
							t.Fatalf("Encode(%q) gives %d, not a text token", text, tok)
						}
					}
					if got := v.Text(ids); got != text {
						t.Errorf("Encode(%q) decodes to %q", text, got)
					}
				}
				if got := v.Text(intsOf(v.Encode(" 🦉 hoo"))); got != "  hoo" {
					t.Errorf("the owl emoji: %q", got)
				}
				for _, p := range whisperCppPrompts {
					want := p.multi
					if english {
						want = p.english
					}
					if got := v.Encode(p.text); !slices.Equal(got, want) {
						t.Errorf("Encode(%q) = %v, whisper.cpp %v", p.text, got, want)
					}
				}
			})
		}
	}
}

func intsOf(ts []int32) []int {
	out := make([]int, len(ts))
	for i, t := range ts {
		out[i] = int(t)
	}
	return out
}

// A file with no weights is refused by the recognizer, saying so.
func TestVocabularyOnlyIsRefused(t *testing.T) {
	path := testmodel.RealFile(t, "whispercpp/for-tests-ggml-tiny.en.bin")
	m, err := Load(context.Background(), path, LoadOptions{CacheDir: t.TempDir()})
	if err == nil {
		m.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "vocabulary only, no weights") {
		t.Fatalf("got %v, want an error saying the file has no weights", err)
	}
}
