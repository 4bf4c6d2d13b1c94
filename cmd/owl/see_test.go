package main

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/owlengine/owl/models/testmodel"
)

// visionFixtures writes the tiny LLaVA-style projector and two images.
func visionFixtures(t *testing.T) (mmproj, a, b string) {
	t.Helper()
	dir := t.TempDir()
	mmproj = filepath.Join(dir, "mmproj.gguf")
	if err := testmodel.WriteProjectorFile(mmproj, testmodel.TinyLlavaProjector()); err != nil {
		t.Fatal(err)
	}
	write := func(name string, seed uint8) string {
		img := image.NewRGBA(image.Rect(0, 0, 48, 40))
		for y := range 40 {
			for x := range 48 {
				img.Set(x, y, color.RGBA{uint8(x*5) + seed, uint8(y*9) ^ seed, seed, 255})
			}
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, img); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return mmproj, write("a.png", 1), write("b.png", 77)
}

func TestSee(t *testing.T) {
	mmproj, a, b := visionFixtures(t)
	run := func(images ...string) map[string]any {
		t.Helper()
		r := owl(t, "", append([]string{"see", "-m", tiny, "--mmproj", mmproj, "-n", "5", "--temp", "0", "--json", "-p", "What is it?"}, images...)...)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		var out map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("%v: %q", err, r.stdout)
		}
		return out
	}
	one, again, two := run(a), run(a), run(a, b)
	if one["text"] != again["text"] || one["completion_tokens"].(float64) != 5 {
		t.Fatalf("greedy answers about one image: %v, %v", one, again)
	}
	// Each image of the tiny projector takes 16 tokens.
	if d := two["prompt_tokens"].(float64) - one["prompt_tokens"].(float64); d < 16 {
		t.Fatalf("a second image added %v prompt tokens", d)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"see", "-m", tiny, a}, 2, "--mmproj"},
		{[]string{"see", "-m", tiny, "--mmproj", mmproj}, 2, "arg"},
		{[]string{"see", "-m", tiny, "--mmproj", mmproj, mmproj}, 1, "bad image"},
		{[]string{"see", "-m", tiny, "--mmproj", tiny, a}, 1, "not a vision projector"},
	} {
		r := owl(t, "", c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) {
			t.Errorf("owl %v: exit %d, stderr %q; want exit %d and %q", c.args, r.code, r.stderr, c.code, c.want)
		}
	}
}

// In chat, /image shows an image with the next message; a later turn
// reuses the cached image and history.
func TestChatImage(t *testing.T) {
	mmproj, a, _ := visionFixtures(t)
	r := owl(t, "/image "+a+"\nWhat is this?\nAnd the colors?\n", "chat", "-m", tiny, "--mmproj", mmproj, "-n", "4", "--temp", "0", "-v")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	turns := regexp.MustCompile(`prompt: (\d+) tokens \((\d+) cached\)`).FindAllStringSubmatch(r.stderr, -1)
	if len(turns) != 2 || turns[1][2] == "0" {
		t.Fatalf("turn timings %v\n%s", turns, r.stderr)
	}
	r = owl(t, "/image "+a+"\nWhat is this?\n", "chat", "-m", tiny, "-n", "2")
	if !strings.Contains(r.stderr, "--mmproj") {
		t.Fatalf("/image without a projector: %q", r.stderr)
	}
}
