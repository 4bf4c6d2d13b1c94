package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/owlengine/owl/audio"
	"github.com/owlengine/owl/internal/hubtest"
	"github.com/owlengine/owl/models/hub"
	"github.com/owlengine/owl/models/testmodel"
)

// The page is tested in Debian's Chromium, headless, driven through the
// DevTools protocol the way a person uses it: its fake microphone plays a
// speech file, its fake camera shows a test pattern. Screenshots of every
// view at a desktop and a phone width are checked for controls cut off or
// overlapping; OWL_SCREENSHOTS=DIR keeps them (make screenshots writes
// docs/screenshots).

// pageModels is a models folder of its own for the page's server (the page
// pulls and removes models): the shared test models, linked.
func pageModels(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"tiny.gguf", "seer.gguf", "mmproj-seer.gguf", "ggml-micro.en.bin"} {
		if err := os.Link(filepath.Join(modelsDir, f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// browserSession is one headless Chromium tab on a server, recording
// console errors and every request the page makes.
type browserSession struct {
	t        *testing.T
	ctx      context.Context
	mu       sync.Mutex
	errors   []string
	requests []*network.Request
	shots    string // where screenshots go
}

func newBrowser(t *testing.T, speech string) *browserSession {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is missing: run `make deps` (Debian's chromium drives the page's tests)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.Flag("use-fake-ui-for-media-stream", true), chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-file-for-fake-audio-capture", speech), chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("disable-gpu", true), chromedp.Flag("lang", "en-US"))
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browserSession{t: t, ctx: ctx, shots: os.Getenv("OWL_SCREENSHOTS")}
	if b.shots == "" {
		b.shots = t.TempDir()
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	console := chromedp.Console(ctx)
	requests := chromedp.Events(ctx, network.RequestWillBeSent)
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.IsException() || m.Type == "error" || m.Type == "assert" {
				b.mu.Lock()
				b.errors = append(b.errors, fmt.Sprintf("%s:%d %s", m.URL, m.Line+1, m))
				b.mu.Unlock()
			}
		}
	}()
	go func() {
		for ev, err := range requests {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.requests = append(b.requests, ev.Request)
			b.mu.Unlock()
		}
	}()
	go func() {
		for _, err := range dialogs { // confirm() of Remove: yes
			if err != nil {
				return
			}
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	return b
}

func (b *browserSession) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 90*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v (console errors: %v)", err, b.consoleErrors())
	}
}

// wait polls expr in the page until it is truthy, and returns its value.
func wait[T any](b *browserSession, expr string, timeout time.Duration) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Poll[T](expr, chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		b.t.Fatalf("waiting for %s: %v (console errors: %v; notice: %q)", expr, err, b.consoleErrors(), eval[string](b, `document.getElementById("notice").textContent`))
	}
	return v
}

func eval[T any](b *browserSession, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

func (b *browserSession) consoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.errors)
}

// layoutJS lists what is cut off at the window's sides or overlaps another
// control, in the view shown.
const layoutJS = `(() => {
  const W = document.documentElement.clientWidth, bad = [];
  if (document.documentElement.scrollWidth > W + 1) bad.push("the page scrolls sideways: " + document.documentElement.scrollWidth + " > " + W);
  const name = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.textContent.trim() ? " '" + e.textContent.trim().slice(0, 20) + "'" : "");
  const shown = [...document.querySelectorAll("button, select, input, textarea, label, h1, h2, th, .message, progress, .state")].filter((e) => {
    const r = e.getBoundingClientRect();
    const d = e.closest("details");
    return r.width > 0 && r.height > 0 && !e.closest("[hidden]") && !e.closest("dialog:not([open])") && getComputedStyle(e).visibility !== "hidden" &&
      !(d && !d.open && !e.matches("summary"));
  });
  // What a scrolling box holds may lie beyond the window: the box scrolls.
  const scrolled = (e) => { for (let p = e.parentElement; p && p !== document.body; p = p.parentElement) if (/auto|scroll|hidden/.test(getComputedStyle(p).overflowX)) return true; return false; };
  for (const e of shown) {
    if (scrolled(e)) continue;
    const r = e.getBoundingClientRect();
    if (r.left < -1 || r.right > W + 1) bad.push(name(e) + " is cut off (" + Math.round(r.left) + "–" + Math.round(r.right) + " of " + W + ")");
  }
  const controls = shown.filter((e) => e.matches("button, select, input:not([type=file]), textarea, progress"));
  for (let i = 0; i < controls.length; i++) for (let j = i + 1; j < controls.length; j++) {
    const a = controls[i].getBoundingClientRect(), c = controls[j].getBoundingClientRect();
    if (a.left < c.right - 1 && c.left < a.right - 1 && a.top < c.bottom - 1 && c.top < a.bottom - 1) bad.push(name(controls[i]) + " overlaps " + name(controls[j]));
  }
  return bad;
})()`

// shoot takes the view at 1280 and 390 px wide, checks its layout at both,
// and keeps the screenshots.
func (b *browserSession) shoot(view string) {
	b.t.Helper()
	for _, w := range []int64{1280, 390} {
		h := int64(800)
		if w < 500 {
			h = 844
		}
		b.do(chromedp.EmulateViewport(w, h))
		time.Sleep(150 * time.Millisecond) // the layout settles
		if bad := eval[[]string](b, layoutJS); len(bad) > 0 {
			b.t.Errorf("%s at %d px: %s", view, w, strings.Join(bad, "; "))
		}
		png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
		if err != nil || len(png) < 1000 {
			b.t.Fatalf("screenshot of %s: %v", view, err)
		}
		if err := os.WriteFile(filepath.Join(b.shots, fmt.Sprintf("%s-%d.png", view, w)), png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
	b.do(chromedp.EmulateViewport(1280, 800))
}

// speechWAV writes espeak-ng's speech of phrases, each followed by a
// second of silence, for the fake microphone.
func speechWAV(t *testing.T, phrases ...string) string {
	t.Helper()
	samples, rate := espeakSpeech(t, 1, 2, phrases...)
	p := filepath.Join(t.TempDir(), "speech.wav")
	if err := os.WriteFile(p, audio.EncodeWAV(samples, rate), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPageInBrowser(t *testing.T) {
	if testing.Short() && raceEnabled {
		t.Skip("the browser test runs in the plain test run")
	}
	srv := hubtest.New(t)
	tinyBytes, err := os.ReadFile(filepath.Join(modelsDir, "tiny.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	srv.AddLFS("owl-test/tiny-GGUF", "tiny-F16.gguf", tinyBytes)
	srv.Throttle("owl-test/tiny-GGUF", "tiny-F16.gguf", len(tinyBytes)/20, 60*time.Millisecond) // a pull that takes a while
	hc := hub.NewClient("owl-test")
	hc.Endpoint = srv.URL()
	ts := testServer(t, Config{ModelsDir: pageModels(t), Hub: hc})
	host := strings.TrimPrefix(ts.URL, "http://")
	b := newBrowser(t, speechWAV(t, "Hello there owl", "What is the time"))

	b.do(chromedp.EmulateViewport(1280, 800), chromedp.Navigate(ts.URL+"/"))
	wait[bool](b, `document.body.dataset.ready === "true"`, 30*time.Second)
	if title := eval[string](b, `document.title`); title != "owl" {
		t.Fatalf("title %q", title)
	}
	b.shoot("chat")

	t.Run("chat", func(t *testing.T) {
		b.t = t
		b.do(chromedp.SetValue(chromedp.ID("chat-model"), "seer"), chromedp.SetValue(chromedp.ID("chat-max-tokens"), "8"),
			chromedp.SetValue(chromedp.ID("chat-temperature"), "0"),
			chromedp.SendKeys(chromedp.ID("message"), "Write **one** word."), chromedp.Click(chromedp.ID("send")))
		plain := wait[string](b, `document.querySelector("#thread .message.assistant[data-prompt-tokens]")?.dataset.promptTokens`, 60*time.Second)
		if n := eval[int](b, `document.querySelectorAll("#thread .message").length`); n != 2 {
			t.Fatalf("%d messages in the thread", n)
		}
		// The same message with an image, in a new chat: the prompt grows
		// by the image's tokens, as the API counts them.
		img := filepath.Join(t.TempDir(), "pattern.png")
		if err := os.WriteFile(img, pngImage(t, 24, 16), 0o644); err != nil {
			t.Fatal(err)
		}
		b.do(chromedp.Click(chromedp.ID("new-chat")), chromedp.SetUploadFiles(chromedp.ID("image-picker"), []string{img}))
		wait[bool](b, `document.querySelectorAll("#attachments img").length === 1`, 10*time.Second)
		b.do(chromedp.SendKeys(chromedp.ID("message"), "Write **one** word."), chromedp.Click(chromedp.ID("send")))
		seen := wait[string](b, `document.querySelector("#thread .message.assistant[data-prompt-tokens]")?.dataset.promptTokens`, 60*time.Second)
		if eval[int](b, `document.querySelectorAll("#thread .message.user img").length`) != 1 {
			t.Fatal("the image is not shown in the thread")
		}
		var p, q int
		fmt.Sscan(plain, &p)
		fmt.Sscan(seen, &q)
		body := fmt.Sprintf(`{"model":"seer","max_tokens":1,"messages":[{"role":"user","content":[{"type":"text","text":"Write **one** word."},{"type":"image_url","image_url":{"url":"data:image/png;base64,%s"}}]}]}`,
			base64.StdEncoding.EncodeToString(pngImage(t, 24, 16)))
		_, _, resp := post(t, ts.URL+"/v1/chat/completions", "application/json", []byte(body))
		var api struct {
			Usage struct {
				PromptTokens int `json:"prompt_tokens"`
			}
		}
		json.Unmarshal(resp, &api)
		if q <= p || q != api.Usage.PromptTokens {
			t.Fatalf("prompt tokens: %d without the image, %d with it (the API counts %d)", p, q, api.Usage.PromptTokens)
		}
		// A snapshot of the (fake) camera is attached like a picked image.
		b.do(chromedp.Click(chromedp.ID("camera")))
		wait[bool](b, `document.getElementById("camera-video").videoWidth > 0`, 20*time.Second)
		b.do(chromedp.Click(chromedp.ID("snap")))
		wait[bool](b, `document.querySelectorAll("#attachments img").length === 1 && document.getElementById("camera-panel").hidden`, 10*time.Second)
		if src := eval[string](b, `document.querySelector("#attachments img").src.slice(0, 23)`); src != "data:image/jpeg;base64," {
			t.Fatalf("snapshot %q", src)
		}
		b.do(chromedp.Click(chromedp.CSS(`#attachments button`)))
		wait[bool](b, `document.querySelectorAll("#attachments img").length === 0`, 10*time.Second)
		if eval[int](b, `document.querySelectorAll("#chat-list li").length`) != 2 {
			t.Fatal("the two conversations are not listed")
		}
		// Conversations stay in the browser.
		b.do(chromedp.Reload())
		wait[bool](b, `document.body.dataset.ready === "true" && document.querySelectorAll("#chat-list li").length === 2 && document.querySelectorAll("#thread .message").length === 2`, 20*time.Second)
		b.shoot("chat-thread")
	})

	t.Run("dictation", func(t *testing.T) {
		b.t = t
		eval[bool](b, `(document.getElementById("message").value = "") === ""`)
		b.do(chromedp.SetValue(chromedp.ID("dictate-model"), "ggml-micro.en"), chromedp.Click(chromedp.ID("dictate")))
		text := wait[string](b, `!document.getElementById("message").classList.contains("interim") && document.getElementById("message").value.trim()`, 60*time.Second)
		b.do(chromedp.Click(chromedp.ID("dictate")))
		if eval[string](b, `document.getElementById("dictate").getAttribute("aria-pressed")`) != "false" || text == "" {
			t.Fatalf("dictation: %q", text)
		}
		t.Logf("dictated: %q", text)
	})

	t.Run("transcribe", func(t *testing.T) {
		b.t = t
		jfk := filepath.Join(t.TempDir(), "jfk.wav")
		os.WriteFile(jfk, jfkShort, 0o644)
		dl := t.TempDir()
		if _, err := chromedp.CallBrowser(b.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dl}); err != nil {
			t.Fatal(err)
		}
		b.do(chromedp.Navigate(ts.URL + "/#transcribe"))
		wait[bool](b, `document.body.dataset.ready === "true"`, 20*time.Second)
		b.do(chromedp.SetUploadFiles(chromedp.ID("transcribe-file"), []string{jfk}), chromedp.SetValue(chromedp.ID("transcribe-model"), "ggml-micro.en"),
			chromedp.Click(chromedp.ID("transcribe-go")))
		wait[bool](b, `document.querySelectorAll("#segments tbody tr").length > 0 && !document.getElementById("segments").hidden`, 60*time.Second)
		b.shoot("transcribe")
		b.do(chromedp.Click(chromedp.CSS(`#transcribe-downloads button[data-format="srt"]`)))
		deadline := time.Now().Add(30 * time.Second)
		for {
			b, err := os.ReadFile(filepath.Join(dl, "jfk.srt"))
			if err == nil && strings.Contains(string(b), "-->") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no SRT downloaded: %q %v", b, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("models", func(t *testing.T) {
		b.t = t
		b.do(chromedp.Click(chromedp.ID("tab-models")))
		wait[bool](b, `["tiny", "seer", "ggml-micro.en"].every((n) => document.querySelector('#models-installed tr[data-model="' + n + '"]'))`, 20*time.Second)
		wait[bool](b, `document.querySelector('#models-loaded tr[data-model="seer"]') !== null`, 20*time.Second)
		b.shoot("models")
		b.do(chromedp.SetValue(chromedp.ID("pull-name"), "hf.co/owl-test/tiny-GGUF:F16"), chromedp.Click(chromedp.ID("pull-go")))
		// The bar moves while the file comes.
		mid := wait[bool](b, `(() => { const p = document.getElementById("pull-bar"); return p.max > 1 && p.value > 0 && p.value < p.max; })()`, 30*time.Second)
		if !mid {
			t.Fatal("the progress bar did not move")
		}
		b.shoot("models-pull")
		wait[bool](b, `document.querySelector('#models-installed tr[data-model="tiny-F16"]') !== null`, 60*time.Second)
		if s := eval[string](b, `document.getElementById("pull-status").textContent`); !strings.Contains(s, "installed") {
			t.Fatalf("pull status %q", s)
		}
		// Unload the loaded text model, remove the pulled one.
		b.do(chromedp.Click(chromedp.CSS(`#models-loaded tr[data-model="seer"] button`)))
		wait[bool](b, `document.querySelector('#models-loaded tr[data-model="seer"]') === null`, 20*time.Second)
		b.do(chromedp.Click(chromedp.CSS(`#models-installed tr[data-model="tiny-F16"] button`)))
		wait[bool](b, `document.querySelector('#models-installed tr[data-model="tiny-F16"]') === null`, 20*time.Second)
	})

	t.Run("talk", func(t *testing.T) {
		b.t = t
		b.do(chromedp.Click(chromedp.ID("tab-talk")), chromedp.SetValue(chromedp.ID("talk-model"), "tiny"),
			chromedp.SetValue(chromedp.ID("talk-whisper"), "ggml-micro.en"), chromedp.Click(chromedp.ID("talk-start")))
		ms := wait[string](b, `(() => { const a = [...document.querySelectorAll("#talk-log .message.assistant")].find((e) => Number(e.dataset.audioMs) > 0 && e.textContent.trim()); return a && a.dataset.audioMs; })()`, 90*time.Second)
		if eval[int](b, `document.querySelectorAll("#talk-log .message.user").length`) < 1 {
			t.Fatal("the user's turn is not shown")
		}
		t.Logf("the answer played %s ms of audio", ms)
		b.shoot("talk")
		b.do(chromedp.Click(chromedp.ID("talk-stop")))
	})

	t.Run("thinking", func(t *testing.T) {
		b.t = t
		dir := t.TempDir()
		c := testmodel.TinyLlama()
		c.ChatTpl = testmodel.ChatMLTemplate + "{% if false %}<think></think>{% endif %}"
		if err := testmodel.WriteLlamaFile(filepath.Join(dir, "thinker.gguf"), c); err != nil {
			t.Fatal(err)
		}
		ts2 := testServer(t, Config{ModelsDir: dir, Engine: thinkingBackend{sharedEngine}})
		host = host + " " + strings.TrimPrefix(ts2.URL, "http://")
		b.do(chromedp.Navigate(ts2.URL + "/#chat"))
		wait[bool](b, `document.body.dataset.ready === "true"`, 20*time.Second)
		b.do(chromedp.Click(chromedp.ID("new-chat")), chromedp.SendKeys(chromedp.ID("message"), "Why?"), chromedp.Click(chromedp.ID("send")))
		th := wait[string](b, `document.querySelector("#thread .message.assistant details.thinking")?.textContent`, 60*time.Second)
		if !strings.HasPrefix(th, "Reasoning") || len(th) <= len("Reasoning") {
			t.Fatalf("reasoning shown as %q", th)
		}
	})

	// Nothing left the machine, and the page never failed.
	b.t = t
	for _, r := range b.requests {
		u, err := url.Parse(r.URL)
		if err != nil || (u.Scheme != "data" && u.Scheme != "blob" && !slices.Contains(strings.Fields(host), u.Host) && u.String() != "about:blank") {
			t.Errorf("the page asked for %s", r.URL)
		}
	}
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}
}

// With an API key the page asks for it, and every call carries it; the API
// refuses calls without it.
func TestPageAPIKey(t *testing.T) {
	if testing.Short() && raceEnabled {
		t.Skip("the browser test runs in the plain test run")
	}
	ts := testServer(t, Config{ModelsDir: pageModels(t), APIKey: "open-sesame"})
	if code, body := get(t, ts.URL+"/v1/models"); code != http.StatusUnauthorized {
		t.Fatalf("without the key: %d %s", code, body)
	}
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/", nil)
	req.Header.Set("Accept", "text/html")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "<title>owl</title>") || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("the page without the key: %d %s", resp.StatusCode, resp.Header)
	}
	b := newBrowser(t, speechWAV(t, "Hello"))
	b.do(chromedp.EmulateViewport(1280, 800), chromedp.Navigate(ts.URL+"/"))
	wait[bool](b, `document.getElementById("key-dialog").open`, 20*time.Second)
	b.shoot("api-key")
	b.do(chromedp.SendKeys(chromedp.ID("key-input"), "open-sesame"), chromedp.Click(chromedp.ID("key-save")))
	wait[bool](b, `document.body.dataset.ready === "true"`, 20*time.Second)
	b.do(chromedp.Click(chromedp.ID("tab-models")))
	wait[bool](b, `document.querySelector('#models-installed tr[data-model="tiny"]') !== null`, 20*time.Second)
	b.mu.Lock()
	defer b.mu.Unlock()
	calls := 0
	for _, r := range b.requests {
		u, _ := url.Parse(r.URL)
		if !strings.HasPrefix(u.Path, "/v1/") && !strings.HasPrefix(u.Path, "/api/") {
			continue
		}
		calls++
		var auth string
		for k, v := range r.Headers { // Chromium reports a fetch's headers in lower case
			if strings.EqualFold(k, "Authorization") {
				auth, _ = v.(string)
			}
		}
		if auth != "Bearer open-sesame" && !(calls == 1 && auth == "") { // the first call, before the key, was refused
			t.Errorf("%s went with Authorization %q", r.URL, auth)
		}
	}
	if calls < 3 {
		t.Fatalf("%d API calls seen", calls)
	}
}
