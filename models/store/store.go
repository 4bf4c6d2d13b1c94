package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Errors about names and entries.
var (
	// ErrBadName: a name that could escape the store's folder or is not
	// one a user could type.
	ErrBadName = errors.New("invalid model name")
	// ErrNotFound: no model of that name is installed.
	ErrNotFound = errors.New("no such model in the store")
	// ErrNameTaken: the name already holds a model from another source.
	ErrNameTaken = errors.New("model name already in use")
	// ErrDamaged: a manifest that cannot be read, or whose file is missing.
	ErrDamaged = errors.New("damaged model store entry")
)

// MaxNameLen is the longest name a model may have.
const MaxNameLen = 128

var nameChars = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:+-]*$`)

// ValidName checks that name can name a model: 1 to MaxNameLen letters,
// digits and ". _ : + -", starting with a letter or digit, without "..".
// Such a name has no separator, is not absolute and cannot escape the store.
func ValidName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrBadName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: %d characters, at most %d", ErrBadName, len(name), MaxNameLen)
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("%w %q: holds a path separator", ErrBadName, name)
	case strings.Contains(name, ".."):
		return fmt.Errorf("%w %q: holds \"..\"", ErrBadName, name)
	case !nameChars.MatchString(name):
		return fmt.Errorf("%w %q: use letters, digits and . _ : + - (starting with a letter or digit)", ErrBadName, name)
	}
	return nil
}

// NameFromFile derives a model name from a file name: the base name without
// .gguf or .bin, with characters a name cannot hold replaced by '-'.
func NameFromFile(file string) string {
	base := file[strings.LastIndex(file, "/")+1:]
	for _, ext := range []string{".gguf", ".bin", ".onnx"} {
		if strings.HasSuffix(strings.ToLower(base), ext) {
			base = base[:len(base)-len(ext)]
			break
		}
	}
	b := []byte(base)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:+-", c) >= 0
		if !ok {
			b[i] = '-'
		}
	}
	name := strings.TrimLeft(string(b), "._:+-")
	for strings.Contains(name, "..") {
		name = strings.ReplaceAll(name, "..", ".")
	}
	if len(name) > MaxNameLen {
		name = name[:MaxNameLen]
	}
	if name == "" {
		name = "model"
	}
	return name
}

// Source says where a model came from.
type Source struct {
	Repo     string `json:"repo,omitempty"`     // ORG/REPO on the hub
	Revision string `json:"revision,omitempty"` // as asked for (main)
	Commit   string `json:"commit,omitempty"`   // the commit it resolved to
	File     string `json:"file,omitempty"`     // path in the repository
	ETag     string `json:"etag,omitempty"`     // the hub's ETag: sha256 for LFS files, git blob id otherwise
	URL      string `json:"url,omitempty"`      // the resolve URL it was downloaded from
}

// Ref writes the source as a hub reference.
func (s Source) Ref() string {
	if s.Repo == "" {
		return ""
	}
	return "hf.co/" + s.Repo + ":" + s.File
}

// Manifest describes one installed model; it is stored as JSON in
// manifests/NAME.json.
type Manifest struct {
	Name   string `json:"name"`
	Kind   Kind   `json:"kind"`
	Source Source `json:"source"`
	SHA256 string `json:"sha256"` // of the file, lowercase hex; also its blob's name
	// Verified is true when the hub published a sha256 for the file and
	// the download matched it; files the hub keeps in git carry only a
	// git blob id, so their sha256 is the store's own.
	Verified bool      `json:"verified"`
	Size     int64     `json:"size"`
	Pulled   time.Time `json:"pulled"`
	// Projector names the mmproj entry pulled with this text model, which
	// image input needs; "" for none.
	Projector string `json:"projector,omitempty"`
	// Config is what a model created from another adds (ollama's
	// Modelfile SYSTEM, TEMPLATE, PARAMETER and MESSAGE); nil for none.
	Config *ModelConfig `json:"config,omitempty"`
}

// ModelConfig is what a created model says on top of its file: a default
// system prompt, a chat template in ollama's form that replaces the
// file's, default options (ollama's names: temperature, top_k, num_ctx,
// stop, …) and messages that open every conversation.
type ModelConfig struct {
	System     string          `json:"system,omitempty"`
	Template   string          `json:"template,omitempty"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Messages   []ConfigMessage `json:"messages,omitempty"`
	From       string          `json:"from,omitempty"` // the model it was created from
}

// ConfigMessage is a message of a ModelConfig.
type ConfigMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Entry is an installed model as List and Get report it: what a server's
// model listing (/v1/models, /api/tags) shows.
type Entry struct {
	Manifest
	Path          string    // the model file
	Digest        string    // "sha256:HEX"
	Modified      time.Time // when the entry was last written
	ProjectorPath string    // the projector's file; "" when none is paired or it was removed
}

// Store is a model store rooted at a folder. Its methods may be called from
// several goroutines and processes at once.
type Store struct {
	dir string
	// freeSpace reports the bytes free for the store's folder; tests
	// replace it.
	freeSpace func(dir string) (uint64, error)
	// cache holds the facts of the plain files Resolve has read.
	cache fileCache
}

// DefaultDir is $OWL_MODELS, or ~/.owl/models.
func DefaultDir() (string, error) {
	if d := os.Getenv("OWL_MODELS"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no model store folder: set OWL_MODELS (%w)", err)
	}
	return filepath.Join(home, ".owl", "models"), nil
}

// Open returns the store in dir. Nothing is created until a model is
// written, so looking a name up never leaves folders behind.
func Open(dir string) *Store {
	return &Store{dir: dir, freeSpace: freeSpace}
}

// OpenDefault opens the store in DefaultDir.
func OpenDefault() (*Store, error) {
	dir, err := DefaultDir()
	if err != nil {
		return nil, err
	}
	return Open(dir), nil
}

// Dir is the store's folder.
func (s *Store) Dir() string { return s.dir }

func (s *Store) manifestPath(name string) string {
	return filepath.Join(s.dir, "manifests", name+".json")
}

func (s *Store) blobPath(sha string) string {
	return filepath.Join(s.dir, "blobs", "sha256-"+sha)
}

// ensure creates the store's folders.
func (s *Store) ensure() error {
	for _, sub := range []string{"manifests", "blobs", "partial", "locks"} {
		if err := os.MkdirAll(filepath.Join(s.dir, sub), 0o755); err != nil {
			return fmt.Errorf("model store: %w", err)
		}
	}
	return nil
}

var hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// readManifest reads and checks the manifest of name.
func (s *Store) readManifest(name string) (Manifest, time.Time, error) {
	p := s.manifestPath(name)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Manifest{}, time.Time{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return Manifest{}, time.Time{}, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, time.Time{}, fmt.Errorf("%w: %s: %v", ErrDamaged, p, err)
	}
	if m.Name != name || !hexSHA256.MatchString(m.SHA256) || m.Size < 0 {
		return Manifest{}, time.Time{}, fmt.Errorf("%w: %s: name %q, sha256 %q, size %d", ErrDamaged, p, m.Name, m.SHA256, m.Size)
	}
	var mod time.Time
	if st, err := os.Stat(p); err == nil {
		mod = st.ModTime()
	}
	return m, mod, nil
}

// writeManifest writes m atomically (a temporary file renamed into place).
func (s *Store) writeManifest(m Manifest) error {
	if err := ValidName(m.Name); err != nil {
		return err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.manifestPath(m.Name), append(b, '\n'))
}

func writeFileAtomic(path string, data []byte) error {
	return writeAtomic(path, func(w io.Writer) error { _, err := w.Write(data); return err })
}

// writeAtomic writes path through write: to a temporary file, synced,
// then renamed into place.
func writeAtomic(path string, write func(io.Writer) error) error {
	return writeAtomicIf(path, write, nil)
}

// writeAtomicIf is writeAtomic whose file is renamed into place only if
// check (when not nil) approves what was written.
func writeAtomicIf(path string, write func(io.Writer) error, check func() error) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	return os.Rename(f.Name(), path)
}

func (s *Store) entry(m Manifest, mod time.Time) (Entry, error) {
	e := Entry{Manifest: m, Path: s.blobPath(m.SHA256), Digest: "sha256:" + m.SHA256, Modified: mod}
	st, err := os.Stat(e.Path)
	if err != nil {
		return e, fmt.Errorf("%w: %s: its file %s is missing; pull it again", ErrDamaged, m.Name, e.Path)
	}
	if st.Size() != m.Size {
		return e, fmt.Errorf("%w: %s: its file %s is %d bytes, the manifest says %d; pull it again", ErrDamaged, m.Name, e.Path, st.Size(), m.Size)
	}
	if m.Projector != "" {
		if pm, _, err := s.readManifest(m.Projector); err == nil {
			if p := s.blobPath(pm.SHA256); fileExists(p) {
				e.ProjectorPath = p
			}
		}
	}
	return e, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// Get returns the installed model called name.
func (s *Store) Get(name string) (Entry, error) {
	if err := ValidName(name); err != nil {
		return Entry{}, err
	}
	m, mod, err := s.readManifest(name)
	if err != nil {
		return Entry{}, err
	}
	return s.entry(m, mod)
}

// Has reports whether a model called name is installed and intact.
func (s *Store) Has(name string) bool {
	_, err := s.Get(name)
	return err == nil
}

// List returns the installed models sorted by name. Damaged entries are
// left out and reported together in the error, beside the good ones.
func (s *Store) List() ([]Entry, error) {
	names, err := s.names()
	if err != nil {
		return nil, err
	}
	var out []Entry
	var errs []error
	for _, n := range names {
		e, err := s.Get(n)
		if err != nil {
			if !errors.Is(err, ErrNotFound) { // removed while listing
				errs = append(errs, err)
			}
			continue
		}
		out = append(out, e)
	}
	return out, errors.Join(errs...)
}

// names lists the names that have a manifest, sorted.
func (s *Store) names() ([]string, error) {
	des, err := os.ReadDir(filepath.Join(s.dir, "manifests"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, de := range des {
		n, ok := strings.CutSuffix(de.Name(), ".json")
		if !ok || !de.Type().IsRegular() || ValidName(n) != nil {
			continue
		}
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

// Remove uninstalls the model called name, and its projector when no other
// installed model is paired with it, then deletes the files no entry uses
// any more. It returns the names removed.
func (s *Store) Remove(name string) ([]string, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	m, _, err := s.readManifest(name)
	if err != nil && !errors.Is(err, ErrDamaged) {
		return nil, err
	}
	if err := os.Remove(s.manifestPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	removed := []string{name}
	if m.Projector != "" && m.Projector != name && !s.pairedElsewhere(m.Projector) {
		if err := os.Remove(s.manifestPath(m.Projector)); err == nil {
			removed = append(removed, m.Projector)
		}
	}
	return removed, s.collect()
}

// ErrExists: the name is taken.
var ErrExists = errors.New("a model of that name is installed")

// Create installs the model name: base's file (a store entry's, or a
// model file lying in the folder, which becomes a blob of the store: a
// hard link where the file system allows, a copy otherwise) with cfg on
// top, replacing an entry of that name.
func (s *Store) Create(name string, base Model, cfg ModelConfig) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := s.ensure(); err != nil {
		return err
	}
	var m Manifest
	if old, _, err := s.readManifest(base.Name); err == nil && "sha256:"+old.SHA256 == base.Digest {
		m = old // a store entry: the same blob and projector
	} else {
		st, err := os.Stat(base.Path)
		if err != nil {
			return err
		}
		digest := s.Digest(base) // cached per version of the file
		if digest == "" {
			return fmt.Errorf("%s cannot be read", base.Path)
		}
		sha := strings.TrimPrefix(digest, "sha256:")
		if _, err := os.Stat(s.blobPath(sha)); err != nil {
			if err := linkOrCopy(base.Path, s.blobPath(sha)); err != nil {
				return err
			}
		}
		m = Manifest{Kind: base.Kind, SHA256: sha, Size: st.Size(), Pulled: time.Now().UTC().Truncate(time.Second)}
		if base.Projector != "" {
			if proj, _, err := s.readManifest(base.Projector); err == nil {
				m.Projector = proj.Name
			}
		}
	}
	m.Name = name
	m.Config = &cfg
	return s.writeManifest(m)
}

// HasBlob reports whether the store holds the blob of sha256 sha (hex).
func (s *Store) HasBlob(sha string) bool {
	_, err := os.Stat(s.blobPath(sha))
	return err == nil && shaPattern.MatchString(sha)
}

// BlobPath is where the blob of sha256 sha lies (whether or not it does).
func (s *Store) BlobPath(sha string) string { return s.blobPath(sha) }

// ErrDigestMismatch: an uploaded blob is not the bytes its digest names.
var ErrDigestMismatch = errors.New("the bytes do not match their sha256")

var shaPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// PutBlob stores r's bytes as the blob of sha256 sha (hex), checking that
// they are; size, when known (else -1), is checked against the free disk
// space first.
func (s *Store) PutBlob(sha string, r io.Reader, size int64) error {
	if !shaPattern.MatchString(sha) {
		return fmt.Errorf("%w: digest %q (want sha256:64 hex digits)", ErrBadName, truncate(sha, 80))
	}
	if err := s.ensure(); err != nil {
		return err
	}
	if s.HasBlob(sha) {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	if err := s.checkSpace("blob sha256:"+sha[:12], size); err != nil {
		return err
	}
	h := sha256.New()
	return writeAtomicIf(s.blobPath(sha), func(w io.Writer) error {
		_, err := io.Copy(io.MultiWriter(w, h), r)
		return err
	}, func() error {
		if got := hex.EncodeToString(h.Sum(nil)); got != sha {
			return fmt.Errorf("%w: got sha256:%s", ErrDigestMismatch, got)
		}
		return nil
	})
}

// linkOrCopy makes dst the same file as src: a hard link, or a copy
// written to a temporary file and renamed into place.
func linkOrCopy(src, dst string) error {
	if os.Link(src, dst) == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeAtomic(dst, func(w io.Writer) error { _, err := io.Copy(w, in); return err })
}

// Copy installs the model called src under the name dst too: a second
// entry for the same file (no bytes are copied), with the same projector.
func (s *Store) Copy(src, dst string) error {
	if err := ValidName(src); err != nil {
		return err
	}
	if err := ValidName(dst); err != nil {
		return err
	}
	m, _, err := s.readManifest(src)
	if err != nil {
		return err
	}
	if _, _, err := s.readManifest(dst); !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrExists, dst)
	}
	m.Name = dst
	return s.writeManifest(m)
}

// pairedElsewhere reports whether an installed model names proj as its projector.
func (s *Store) pairedElsewhere(proj string) bool {
	names, _ := s.names()
	for _, n := range names {
		if m, _, err := s.readManifest(n); err == nil && m.Projector == proj {
			return true
		}
	}
	return false
}

// collect deletes blobs that no manifest refers to. A blob is deleted only
// under its lock and after checking again, so a pull installing it (which
// holds the lock until its manifest is written) keeps it.
func (s *Store) collect() error {
	des, err := os.ReadDir(filepath.Join(s.dir, "blobs"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, de := range des {
		sha, ok := strings.CutPrefix(de.Name(), "sha256-")
		if !ok || !hexSHA256.MatchString(sha) {
			continue
		}
		used, err := s.blobUsed(sha)
		if err != nil || used {
			continue
		}
		unlock, ok, err := s.tryLock(blobKey(sha))
		if err != nil || !ok {
			continue
		}
		if used, err := s.blobUsed(sha); err == nil && !used {
			os.Remove(s.blobPath(sha))
		}
		unlock()
	}
	return nil
}

// blobUsed reports whether a manifest refers to the blob sha. A damaged
// manifest counts as a use: nothing is deleted on a guess.
func (s *Store) blobUsed(sha string) (bool, error) {
	names, err := s.names()
	if err != nil {
		return true, err
	}
	for _, n := range names {
		m, _, err := s.readManifest(n)
		if errors.Is(err, ErrDamaged) || err == nil && m.SHA256 == sha {
			return true, nil
		}
	}
	return false, nil
}
