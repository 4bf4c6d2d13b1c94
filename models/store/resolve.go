package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/owlengine/owl/models/hub"
)

// Model is what a model name resolves to: a store entry, a model file
// lying in the store's folder, or (for a command line) a model file
// anywhere. Every entry point that takes a model name resolves it here,
// so that one name is one model everywhere: the same file, the same
// paired projector.
type Model struct {
	Name          string
	Kind          Kind
	Path          string // the model file
	Size          int64
	Modified      time.Time
	Digest        string // "sha256:HEX" of a store entry; Store.Digest computes a plain file's
	Projector     string // the paired projector's name, "" for none
	ProjectorPath string
	Source        string // the hub reference it was pulled from, "" for a plain file
	// Config is a created model's system prompt, options and messages
	// (nil for none).
	Config *ModelConfig
}

// Errors of Resolve besides ErrNotFound and ErrBadName.
var (
	// ErrOutside: a path that leaves the store's folder.
	ErrOutside = errors.New("outside the models folder")
	// ErrNoName: no model named.
	ErrNoName = errors.New("no model named")
)

// ResolveOptions say what names may be.
type ResolveOptions struct {
	// AnyFile lets a name be the path of a model file anywhere, which
	// wins over a store name (a command line's -m). Without it, paths
	// must lie in the store's folder (a server, whose clients must not
	// read other files).
	AnyFile bool
}

// Resolve finds the model name names:
//   - with AnyFile, an existing file's path (its Kind empty when its
//     content is not a model owl recognizes, for its reader to report);
//   - a hub reference a model was pulled from (hf.co/ORG/REPO[:FILE]);
//   - a store name, or the name of a model file lying in the store's
//     folder (its file name, with or without .gguf/.bin), ollama's
//     ":latest" tag ignored;
//   - without AnyFile, a path inside the store's folder (symbolic links
//     followed, and checked not to lead out).
//
// A text model lying in the folder is paired with the projector named
// after it (mmproj-NAME, NAME-mmproj or NAME.mmproj); a store entry with
// the projector pulled with it. Errors wrap ErrNoName, ErrBadName,
// ErrNotFound, ErrOutside or ErrUnknownKind.
func (s *Store) Resolve(name string, o ResolveOptions) (Model, error) {
	switch {
	case name == "":
		return Model{}, ErrNoName
	case strings.ContainsRune(name, 0) || len(name) > 4096:
		return Model{}, fmt.Errorf("%w: %q", ErrBadName, truncate(name, 64))
	}
	if o.AnyFile {
		if st, err := os.Stat(name); err == nil && !st.IsDir() {
			m, err := s.fileModel(name, NameFromFile(filepath.Base(name)), st, false)
			if err != nil {
				// The file is what was asked for: whoever reads it says
				// what is wrong with it, in the words of its format.
				m = Model{Name: NameFromFile(filepath.Base(name)), Path: name, Size: st.Size(), Modified: st.ModTime()}
			}
			return m, nil
		}
	}
	if hub.IsRef(name) {
		pulled, err := s.Pull(context.Background(), nil, name, PullOptions{Offline: true})
		if err != nil {
			if errors.Is(err, ErrOffline) {
				return Model{}, fmt.Errorf("%w: %s (owl pull %s downloads it)", ErrNotFound, name, name)
			}
			return Model{}, err
		}
		e, err := s.Get(pulled[0].Name)
		if err != nil {
			return Model{}, err
		}
		return fromEntry(e), nil
	}
	if strings.ContainsAny(name, `/\`) || strings.Contains(name, "..") || filepath.IsAbs(name) {
		if o.AnyFile {
			return Model{}, fmt.Errorf("%w: %s: no such file", ErrNotFound, name)
		}
		return s.resolvePath(name)
	}
	names := []string{name}
	if n := strings.TrimSuffix(name, ":latest"); n != name {
		names = append(names, n)
	}
	for _, n := range names {
		if ValidName(n) == nil {
			e, err := s.Get(n)
			if err == nil {
				return fromEntry(e), nil
			}
			if !errors.Is(err, ErrNotFound) {
				return Model{}, err
			}
		}
		for _, m := range s.plainFiles() {
			if m.Name == n || filepath.Base(m.Path) == n {
				return m, nil
			}
		}
	}
	return Model{}, fmt.Errorf("%w: %s", ErrNotFound, name)
}

// Models lists every model: the store's entries, then the model files
// lying in its folder whose names no entry takes, sorted by name. Damaged
// entries are reported in the error, beside the rest.
func (s *Store) Models() ([]Model, error) {
	entries, err := s.List()
	var out []Model
	seen := map[string]bool{}
	for _, e := range entries {
		out = append(out, fromEntry(e))
		seen[e.Name] = true
	}
	for _, m := range s.plainFiles() {
		if !seen[m.Name] {
			out = append(out, m)
			seen[m.Name] = true
		}
	}
	slices.SortFunc(out, func(a, b Model) int { return strings.Compare(a.Name, b.Name) })
	return out, err
}

// Unusable is a file in the store's folder named like a model file that
// owl cannot use, and why.
type Unusable struct {
	Name   string `json:"name"`
	File   string `json:"file"`
	Reason string `json:"error"`
}

// Unusable lists the files lying in the store's folder that are named
// like model files (.gguf, .bin, .onnx) but are none owl can read — cut
// short, corrupt, or of another format — so that a listing can say why a
// model is missing instead of leaving it out in silence.
func (s *Store) Unusable() []Unusable {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil
	}
	var out []Unusable
	for _, de := range des {
		if !de.Type().IsRegular() || !isModelFile(de.Name()) {
			continue
		}
		st, err := de.Info()
		if err != nil {
			continue
		}
		path := filepath.Join(s.dir, de.Name())
		if f := s.facts(path, st); f.err != nil {
			// The reason without the folder's path: listings go to clients.
			out = append(out, Unusable{Name: NameFromFile(de.Name()), File: de.Name(), Reason: strings.TrimPrefix(f.err.Error(), path+": ")})
		}
	}
	return out
}

func fromEntry(e Entry) Model {
	m := Model{Name: e.Name, Kind: e.Kind, Path: e.Path, Size: e.Size, Modified: e.Modified, Digest: e.Digest,
		ProjectorPath: e.ProjectorPath, Source: e.Source.Ref(), Config: e.Config}
	if e.ProjectorPath != "" {
		m.Projector = e.Manifest.Projector
	}
	return m
}

// fileModel is the model in the file at path, recognized by its content.
func (s *Store) fileModel(path, name string, st fs.FileInfo, pair bool) (Model, error) {
	f := s.facts(path, st)
	if f.err != nil {
		return Model{}, f.err
	}
	m := Model{Name: name, Kind: f.kind, Path: path, Size: st.Size(), Modified: st.ModTime()}
	if pair && (m.Kind == KindLLM || m.Kind == KindVoice) {
		for _, pf := range s.plainFiles() {
			if pf.Path == path {
				m.Projector, m.ProjectorPath = pf.Projector, pf.ProjectorPath
			}
		}
	}
	return m, nil
}

// resolvePath accepts a path only when it names a regular file inside the
// store's folder, after following symbolic links.
func (s *Store) resolvePath(name string) (Model, error) {
	dir, err := filepath.Abs(s.dir)
	if err != nil {
		return Model{}, err
	}
	p := name
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	outside := fmt.Errorf("%w: %s", ErrOutside, truncate(name, 200))
	if !within(dir, filepath.Clean(p)) {
		return Model{}, outside
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return Model{}, fmt.Errorf("%w: %s", ErrNotFound, truncate(name, 200))
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil || !within(realDir, real) {
		return Model{}, outside
	}
	st, err := os.Stat(real)
	if err != nil || !st.Mode().IsRegular() {
		return Model{}, fmt.Errorf("%w: %s", ErrNotFound, truncate(name, 200))
	}
	return s.fileModel(real, name, st, true)
}

// within reports whether path lies inside dir (both clean and absolute).
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// isModelFile says whether a file name looks like a model file.
func isModelFile(name string) bool {
	l := strings.ToLower(name)
	return strings.HasSuffix(l, ".gguf") || strings.HasSuffix(l, ".bin") || strings.HasSuffix(l, ".onnx")
}

// plainFiles lists the model files lying directly in the store's folder,
// each text model paired with a projector named after it.
func (s *Store) plainFiles() []Model {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil
	}
	var out []Model
	for _, de := range des {
		if !de.Type().IsRegular() || !isModelFile(de.Name()) {
			continue
		}
		path := filepath.Join(s.dir, de.Name())
		st, err := de.Info()
		if err != nil {
			continue
		}
		if m, err := s.fileModel(path, NameFromFile(de.Name()), st, false); err == nil {
			out = append(out, m)
		}
	}
	for i := range out {
		if out[i].Kind == KindVoice { // its configuration beside it
			if cfg := out[i].Path + ".json"; fileExists(cfg) {
				out[i].Projector, out[i].ProjectorPath = filepath.Base(cfg), cfg
			}
			continue
		}
		if out[i].Kind != KindLLM {
			continue
		}
		for _, p := range out {
			if p.Kind == KindMMProj && projectorOf(p.Name, out[i].Name) {
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

// fileFacts are what reading a plain file told, valid while its size and
// modification time stay the same. The digest is computed only when asked
// (hashing reads the whole file), never to resolve a name.
type fileFacts struct {
	size   int64
	mod    time.Time
	kind   Kind
	err    error
	digest string
	info   *Info // Inspect's, once asked
}

// fileCache holds the facts of the files a store has read. Each fact of a
// file is read by one caller at a time: the others that ask meanwhile
// wait for that read (many requests naming models at once, as a server
// starts, would otherwise each parse every GGUF of the folder, tokenizer
// arrays and all, or hash the same file side by side).
type fileCache struct {
	mu    sync.Mutex // guards files
	files map[string]fileFacts
	reads singleflight.Group
}

// once runs read unless another caller is reading the same fact of path;
// then it waits for that read, and gets its error.
func (c *fileCache) once(fact, path string, read func() error) error {
	_, err, _ := c.reads.Do(fact+"\x00"+path, func() (any, error) { return nil, read() })
	return err
}

// set changes the facts of path while they are those of st's version.
func (c *fileCache) set(path string, st fs.FileInfo, change func(*fileFacts)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.files[path]; ok && f.size == st.Size() && f.mod.Equal(st.ModTime()) {
		change(&f)
		c.files[path] = f
	}
}

func (c *fileCache) get(path string, st fs.FileInfo) (fileFacts, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.files[path]
	return f, ok && f.size == st.Size() && f.mod.Equal(st.ModTime())
}

// update stores f for path. (Should the file have changed meanwhile,
// the next get sees another size or time and reads it again.)
func (c *fileCache) update(path string, f fileFacts) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.files == nil {
		c.files = map[string]fileFacts{}
	}
	c.files[path] = f
}

// detect, digestFile and inspect read a file's facts (a test counts
// their calls).
var (
	detect     = DetectKind
	digestFile = fileDigest
	inspect    = Inspect
)

// facts reads (or recalls) the kind of the file at path.
func (s *Store) facts(path string, st fs.FileInfo) fileFacts {
	read := func() fileFacts {
		if f, ok := s.cache.get(path, st); ok {
			return f
		}
		f := fileFacts{size: st.Size(), mod: st.ModTime()}
		f.kind, f.err = detect(path)
		s.cache.update(path, f)
		return f
	}
	if f, ok := s.cache.get(path, st); ok {
		return f
	}
	s.cache.once("kind", path, func() error { read(); return nil })
	return read() // (read again only when the file changed meanwhile)
}

// Digest is m's "sha256:HEX": a store entry's, or a plain file's hash,
// computed once per version of the file ("" when it cannot be read).
func (s *Store) Digest(m Model) string {
	if m.Digest != "" {
		return m.Digest
	}
	st, err := os.Stat(m.Path)
	if err != nil {
		return ""
	}
	if f := s.facts(m.Path, st); f.digest != "" {
		return f.digest
	}
	s.cache.once("digest", m.Path, func() error {
		if s.facts(m.Path, st).digest != "" {
			return nil
		}
		d, err := digestFile(m.Path)
		if err == nil {
			s.cache.set(m.Path, st, func(f *fileFacts) { f.digest = d })
		}
		return err
	})
	return s.facts(m.Path, st).digest
}

// Info is Inspect's account of m's file (the memory estimate for the
// default context), read once per version of the file.
func (s *Store) Info(m Model) (Info, error) {
	st, err := os.Stat(m.Path)
	if err != nil {
		return Info{}, err
	}
	if f := s.facts(m.Path, st); f.info != nil {
		return *f.info, nil
	}
	if err := s.cache.once("info", m.Path, func() error {
		if s.facts(m.Path, st).info != nil {
			return nil
		}
		in, err := inspect(m.Path, 0)
		if err == nil {
			s.cache.set(m.Path, st, func(f *fileFacts) { f.info = &in })
		}
		return err
	}); err != nil {
		return Info{}, err
	}
	if f := s.facts(m.Path, st); f.info != nil {
		return *f.info, nil
	}
	return inspect(m.Path, 0) // the file changed while it was read
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

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
