package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/owlengine/owl/engine"
	"github.com/owlengine/owl/models/store"
)

// model is a model the server can serve.
type model struct {
	Name          string
	Kind          store.Kind
	Path          string // the model file
	Size          int64
	Modified      time.Time
	Digest        string // "sha256:HEX" of a store entry; catalog.digest for any model
	Projector     string // name of the paired projector, "" for none
	ProjectorPath string
	Source        string // hub reference it was pulled from, "" for a plain file
}

// catalog finds models: the store's entries, and plain model files lying
// directly in the store's folder (named after their file). It never opens
// a file outside that folder.
type catalog struct {
	dir   string
	store *store.Store

	mu    sync.Mutex // guards files and infos
	files map[string]fileFacts
	infos map[string]ggufInfo
}

// ggufInfo is a GGUF file's metadata summary, valid while the file's size
// and modification time stay the same.
type ggufInfo struct {
	size int64
	mod  time.Time
	info engine.ModelInfo
	err  error
}

// info reads (or recalls) the metadata of the GGUF file at path.
func (c *catalog) info(path string) (engine.ModelInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return engine.ModelInfo{}, err
	}
	c.mu.Lock()
	gi, ok := c.infos[path]
	c.mu.Unlock()
	if ok && gi.size == st.Size() && gi.mod.Equal(st.ModTime()) {
		return gi.info, gi.err
	}
	gi = ggufInfo{size: st.Size(), mod: st.ModTime()}
	gi.info, gi.err = engine.InspectModel(path)
	c.mu.Lock()
	c.infos[path] = gi
	c.mu.Unlock()
	return gi.info, gi.err
}

// fileFacts are what reading a plain file told, valid while its size and
// modification time stay the same. The digest is computed only when a
// listing shows it (hashing reads the whole file), never to resolve a name.
type fileFacts struct {
	size   int64
	mod    time.Time
	kind   store.Kind
	err    error
	digest string // "" until digest is asked for it
}

func newCatalog(dir string) *catalog {
	return &catalog{dir: dir, store: store.Open(dir), files: map[string]fileFacts{}, infos: map[string]ggufInfo{}}
}

// modelFileExt says whether a file name looks like a model file.
func modelFileExt(name string) bool {
	l := strings.ToLower(name)
	return strings.HasSuffix(l, ".gguf") || strings.HasSuffix(l, ".bin")
}

// facts reads (or recalls) the kind of the plain file at path.
func (c *catalog) facts(path string, st fs.FileInfo) fileFacts {
	c.mu.Lock()
	f, ok := c.files[path]
	c.mu.Unlock()
	if ok && f.size == st.Size() && f.mod.Equal(st.ModTime()) {
		return f
	}
	f = fileFacts{size: st.Size(), mod: st.ModTime()}
	f.kind, f.err = store.DetectKind(path)
	c.mu.Lock()
	c.files[path] = f
	c.mu.Unlock()
	return f
}

// digest returns m's "sha256:HEX": the store's, or, for a plain file, its
// hash computed once per size and modification time ("" when it cannot be
// read).
func (c *catalog) digest(m model) string {
	if m.Digest != "" {
		return m.Digest
	}
	c.mu.Lock()
	f, ok := c.files[m.Path]
	c.mu.Unlock()
	if !ok || f.size != m.Size || !f.mod.Equal(m.Modified) {
		return ""
	}
	if f.digest == "" {
		d, err := fileDigest(m.Path)
		if err != nil {
			return ""
		}
		f.digest = d
		c.mu.Lock()
		if cur, ok := c.files[m.Path]; ok && cur.size == f.size && cur.mod.Equal(f.mod) {
			c.files[m.Path] = f
		}
		c.mu.Unlock()
	}
	return f.digest
}

func fileDigest(path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// plainFiles lists the model files lying directly in the folder.
func (c *catalog) plainFiles() []model {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return nil
	}
	var out []model
	for _, de := range des {
		if !de.Type().IsRegular() || !modelFileExt(de.Name()) {
			continue
		}
		path := filepath.Join(c.dir, de.Name())
		st, err := de.Info()
		if err != nil {
			continue
		}
		f := c.facts(path, st)
		if f.err != nil {
			continue
		}
		out = append(out, model{Name: store.NameFromFile(de.Name()), Kind: f.kind, Path: path, Size: st.Size(), Modified: st.ModTime()})
	}
	// Pair each text model with a projector named after it.
	for i := range out {
		if out[i].Kind != store.KindLLM {
			continue
		}
		for _, p := range out {
			if p.Kind == store.KindMMProj && projectorOf(p.Name, out[i].Name) {
				out[i].Projector, out[i].ProjectorPath = p.Name, p.Path
				break
			}
		}
	}
	return out
}

// projectorOf says whether the projector file named proj pairs with the
// text model named name: mmproj-NAME, NAME-mmproj or NAME.mmproj.
func projectorOf(proj, name string) bool {
	p := strings.ToLower(proj)
	n := strings.ToLower(name)
	return p == "mmproj-"+n || p == n+"-mmproj" || p == n+".mmproj"
}

// list returns every model: the store's entries, then plain files whose
// names no entry takes, sorted by name.
func (c *catalog) list() ([]model, error) {
	entries, err := c.store.List()
	var out []model
	seen := map[string]bool{}
	for _, e := range entries {
		out = append(out, fromEntry(e))
		seen[e.Name] = true
	}
	for _, m := range c.plainFiles() {
		if !seen[m.Name] {
			out = append(out, m)
			seen[m.Name] = true
		}
	}
	slices.SortFunc(out, func(a, b model) int { return strings.Compare(a.Name, b.Name) })
	return out, err
}

func fromEntry(e store.Entry) model {
	m := model{Name: e.Name, Kind: e.Kind, Path: e.Path, Size: e.Size, Modified: e.Modified, Digest: e.Digest,
		ProjectorPath: e.ProjectorPath, Source: e.Source.Ref()}
	if e.ProjectorPath != "" {
		m.Projector = e.Manifest.Projector
	}
	return m
}

// errNoModel is the 400 for a request without a model.
var errNoModel = badRequest("model", "no model: name one (GET /v1/models lists them)")

// resolve finds the model a request names: a store name, a plain file's
// name (with or without its extension), or a path inside the models
// folder. ollama's ":latest" tag is ignored. Names that could reach
// outside the folder are refused.
func (c *catalog) resolve(name string) (model, error) {
	if name == "" {
		return model{}, errNoModel
	}
	if strings.ContainsRune(name, 0) || len(name) > 4096 {
		return model{}, badRequest("model", "model name %q is not valid", truncate(name, 64))
	}
	if strings.ContainsAny(name, `/\`) || strings.Contains(name, "..") || filepath.IsAbs(name) {
		return c.resolvePath(name)
	}
	names := []string{name}
	if n := strings.TrimSuffix(name, ":latest"); n != name {
		names = append(names, n)
	}
	for _, n := range names {
		if store.ValidName(n) == nil {
			e, err := c.store.Get(n)
			if err == nil {
				return fromEntry(e), nil
			}
			if !errors.Is(err, store.ErrNotFound) {
				return model{}, err
			}
		}
		for _, m := range c.plainFiles() {
			if m.Name == n || filepath.Base(m.Path) == n {
				return m, nil
			}
		}
	}
	return model{}, notFoundModel(name)
}

func notFoundModel(name string) *apiError {
	return &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Param: "model", Code: "model_not_found",
		Message: fmt.Sprintf("model %q not found: GET /v1/models (or /api/tags) lists the models served", name)}
}

// resolvePath accepts a path only when it names a regular file inside the
// models folder, after following symbolic links.
func (c *catalog) resolvePath(name string) (model, error) {
	p := name
	if !filepath.IsAbs(p) {
		p = filepath.Join(c.dir, p)
	}
	outside := badRequest("model", "model %q is outside the models folder; name a model it holds", truncate(name, 200))
	if !within(c.dir, filepath.Clean(p)) {
		return model{}, outside
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return model{}, notFoundModel(name)
	}
	realDir, err := filepath.EvalSymlinks(c.dir)
	if err != nil || !within(realDir, real) {
		return model{}, outside
	}
	st, err := os.Stat(real)
	if err != nil || !st.Mode().IsRegular() {
		return model{}, notFoundModel(name)
	}
	f := c.facts(real, st)
	if f.err != nil {
		return model{}, badRequest("model", "%s is not a model file owl recognizes", truncate(name, 200))
	}
	m := model{Name: name, Kind: f.kind, Path: real, Size: st.Size(), Modified: st.ModTime()}
	if m.Kind == store.KindLLM {
		for _, pf := range c.plainFiles() {
			if pf.Path == real {
				m.Projector, m.ProjectorPath = pf.Projector, pf.ProjectorPath
			}
		}
	}
	return m, nil
}

// within reports whether path lies inside dir (both clean and absolute).
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// realDir resolves dir to an absolute path without symbolic links.
func realDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", err
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%s is not a folder", dir)
	}
	return real, nil
}

// textModel resolves name and checks that it generates text.
func (c *catalog) textModel(name string) (model, error) {
	return c.modelOfKind(name, "model", store.KindLLM, "a text model")
}

// speechModel resolves name and checks that it recognizes speech.
func (c *catalog) speechModel(name string) (model, error) {
	return c.modelOfKind(name, "model", store.KindWhisper, "a speech model")
}

// vadModel resolves name, the request's param, and checks that it is a
// voice activity model.
func (c *catalog) vadModel(name, param string) (model, error) {
	if name == "" {
		return model{}, badRequest(param, "%s is missing: name a Silero VAD model (owl pull silero-vad)", param)
	}
	return c.modelOfKind(name, param, store.KindVAD, "a voice activity model")
}

// modelOfKind resolves name and checks that it is of kind (described by
// what); param is the request field that named it.
func (c *catalog) modelOfKind(name, param string, kind store.Kind, what string) (model, error) {
	m, err := c.resolve(name)
	if err != nil {
		return m, err
	}
	if m.Kind != kind {
		return m, badRequest(param, "model %q is a %s, not %s; use it with %s", name, m.Kind.Describe(), what, useFor(m.Kind))
	}
	return m, nil
}

func useFor(k store.Kind) string {
	switch k {
	case store.KindLLM:
		return "/v1/chat/completions or /api/chat"
	case store.KindWhisper:
		return "/v1/audio/transcriptions"
	case store.KindMMProj:
		return "its text model, which uses it for images"
	}
	return "the vad field of live transcription"
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
