package models_test

import (
	"strings"
	"testing"

	"github.com/owlengine/owl/models"
)

// realPiperConfig has the fields and layout of en_US-lessac-medium's
// .onnx.json (the first entries of Piper's default phoneme map).
const realPiperConfig = `{
  "audio": {"sample_rate": 22050, "quality": "medium"},
  "espeak": {"voice": "en-us"},
  "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8},
  "phoneme_type": "espeak",
  "phoneme_map": {},
  "phoneme_id_map": {"_": [0], "^": [1], "$": [2], " ": [3], "!": [4], "'": [5], "(": [6], ")": [7], ",": [8], "-": [9], ".": [10], "a": [14], "ɪ": [74], "ˈ": [120]},
  "num_symbols": 256,
  "num_speakers": 1,
  "speaker_id_map": {},
  "piper_version": "1.0.0",
  "language": {"code": "en_US", "family": "en", "region": "US", "name_native": "English"},
  "dataset": "lessac"
}`

func TestPiperConfig(t *testing.T) {
	c, err := models.ParsePiperConfig([]byte(realPiperConfig))
	if err != nil {
		t.Fatal(err)
	}
	if c.Audio.SampleRate != 22050 || c.Espeak.Voice != "en-us" || c.Inference.NoiseW != 0.8 || c.PhonemeIDMap["ɪ"][0] != 74 || c.NumSpeakers != 1 {
		t.Fatalf("%+v", c)
	}
	for name, edit := range map[string][2]string{
		"not JSON":        {`"audio"`, `"audio`},
		"no id map":       {`"phoneme_id_map"`, `"phoneme_id_mapx"`},
		"rate":            {`22050`, `220500`},
		"no pad":          {`"_": [0],`, ``},
		"id range":        {`"ˈ": [120]`, `"ˈ": [999]`},
		"two characters":  {`"ˈ": [120]`, `"ab": [120]`},
		"phoneme type":    {`"phoneme_type": "espeak"`, `"phoneme_type": "klingon"`},
		"no espeak voice": {`"voice": "en-us"`, `"voice": ""`},
		"speaker range":   {`"speaker_id_map": {}`, `"speaker_id_map": {"bob": 3}`},
	} {
		b := strings.Replace(realPiperConfig, edit[0], edit[1], 1)
		if _, err := models.ParsePiperConfig([]byte(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParsePiperConfig(f *testing.F) {
	f.Add([]byte(realPiperConfig))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := models.ParsePiperConfig(b)
		if err != nil {
			return
		}
		for _, p := range []string{models.PiperPad, models.PiperBOS, models.PiperEOS} {
			if len(c.PhonemeIDMap[p]) == 0 {
				t.Fatalf("accepted without %q", p)
			}
		}
		c.Speakers()
	})
}
