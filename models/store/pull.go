package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/owlengine/owl/models/hub"
)

// Errors of a pull, besides the hub's (hub.ErrNotFound, hub.ErrNetwork, ...).
var (
	// ErrOffline: the model is not installed and downloading is off.
	ErrOffline = errors.New("not in the model store, and downloads are off")
	// ErrWrongKind: the file is a model, but not of the kind asked for.
	ErrWrongKind = errors.New("model of another kind")
	// ErrNoChoice: a repository's files do not say which one is meant.
	ErrNoChoice = errors.New("cannot choose a model file")
)

// PullOptions tune Pull.
type PullOptions struct {
	// Name installs the model under this name instead of the catalog name
	// or the one derived from its file name.
	Name string
	// Offline forbids network access: the pull succeeds only when the
	// model is installed already.
	Offline bool
	// NoProjector skips the projector of a multimodal model.
	NoProjector bool
	// Progress, when set, is called as a file downloads.
	Progress func(PullProgress)
}

// PullProgress reports a download of a pull.
type PullProgress struct {
	Name        string // the store name the file is installed as
	File        string // hf.co/ORG/REPO:PATH
	Done, Total int64  // bytes; Total is -1 when unknown
	Resumed     int64  // bytes that were in the partial file already
	// Waiting is set, once, when another pull holds the file's lock: this
	// one waits for it to finish.
	Waiting bool
}

// Action says what a pull did for one model.
type Action string

// What Pull can do for each model.
const (
	Downloaded Action = "downloaded" // fetched from the start
	Resumed    Action = "resumed"    // fetched, continuing a partial file
	Linked     Action = "linked"     // the file was in the store already (another name, or a concurrent pull)
	UpToDate   Action = "up to date" // installed already as the hub has it
)

// Pulled is one model a pull installed or found installed.
type Pulled struct {
	Entry
	Action Action
}

// target is one file a pull installs.
type target struct {
	name            string
	repo, rev, file string
	want            Kind   // the kind the file must be, or "" for any
	projector       string // for a model: the projector's store name
}

func (t target) label() string { return "hf.co/" + t.repo + ":" + t.file }

// Pull installs what, a catalog name ("whisper:base.en") or a hub reference
// (hf.co/ORG/REPO[:FILE or :QUANT]), fetching it through c unless it is
// installed and unchanged. A text model's projector (a file named mmproj*
// beside it, or the catalog's) is pulled and paired with it. The model comes
// first in the result, its projector second.
func (s *Store) Pull(ctx context.Context, c *hub.Client, what string, opts PullOptions) ([]Pulled, error) {
	if opts.Name != "" {
		if err := ValidName(opts.Name); err != nil {
			return nil, err
		}
	}
	if opts.Offline {
		return s.pullOffline(what, opts)
	}
	if c == nil {
		return nil, errors.New("pull: no hub client")
	}
	model, proj, err := s.plan(ctx, c, what, opts)
	if err != nil {
		return nil, err
	}
	var out []Pulled
	if proj != nil {
		p, err := s.fetch(ctx, c, *proj, opts.Progress)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	m, err := s.fetch(ctx, c, model, opts.Progress)
	if err != nil {
		return nil, err
	}
	return append([]Pulled{m}, out...), nil
}

// plan works out which files what names and the names they get.
func (s *Store) plan(ctx context.Context, c *hub.Client, what string, opts PullOptions) (target, *target, error) {
	if e, ok := LookupCatalog(what); ok {
		t := target{name: e.Name, repo: e.Repo, rev: hub.DefaultRevision, file: e.File, want: e.Kind}
		if opts.Name != "" {
			t.name = opts.Name
		}
		if e.Projector == "" || opts.NoProjector {
			return t, nil, nil
		}
		want := KindMMProj
		t.projector = ProjectorName(t.name)
		if e.Kind == KindVoice {
			t.projector, want = VoiceConfigName(t.name), KindVoiceConfig
		}
		return t, &target{name: t.projector, repo: e.Repo, rev: hub.DefaultRevision, file: e.Projector, want: want}, nil
	}
	if !hub.IsRef(what) {
		return target{}, nil, notPullable(what)
	}
	ref, err := hub.ParseRef(what)
	if err != nil {
		return target{}, nil, err
	}
	file := ref.File
	var files []hub.RepoFile
	needList := file == "" || (!opts.NoProjector && isGGUF(file) && !isProjectorFile(file))
	if needList {
		files, err = c.ListFiles(ctx, ref.Repo, ref.Revision)
		// A named file needs the listing only to find its projector; a
		// mirror without the listing API still serves the file itself.
		namedFileOK := file != "" && (errors.Is(err, hub.ErrNotFound) || errors.Is(err, hub.ErrProtocol))
		if err != nil && !namedFileOK {
			return target{}, nil, err
		}
	}
	if file == "" {
		if file, err = chooseModelFile(ref, files); err != nil {
			return target{}, nil, err
		}
	}
	t := target{name: NameFromFile(file), repo: ref.Repo, rev: ref.Revision, file: file}
	if opts.Name != "" {
		t.name = opts.Name
	}
	if opts.NoProjector || !isGGUF(file) || isProjectorFile(file) {
		return t, nil, nil
	}
	pf := chooseProjector(files, file)
	if pf == "" {
		return t, nil, nil
	}
	t.want = KindLLM
	t.projector = ProjectorName(t.name)
	return t, &target{name: t.projector, repo: ref.Repo, rev: ref.Revision, file: pf, want: KindMMProj}, nil
}

func notPullable(what string) error {
	return fmt.Errorf("%q is neither a catalog name (owl models catalog lists them) nor a hub reference hf.co/ORG/REPO[:FILE or :QUANT]", what)
}

func isGGUF(file string) bool { return strings.HasSuffix(strings.ToLower(file), ".gguf") }

func isProjectorFile(file string) bool {
	return strings.HasPrefix(strings.ToLower(path.Base(file)), "mmproj")
}

var splitShard = regexp.MustCompile(`-\d{5}-of-(\d{5})\.gguf$`)

// quantMatches reports whether file's name holds quant as a whole token
// (Q4_K matches x-Q4_K.gguf, not x-Q4_K_M.gguf), ignoring case.
func quantMatches(file, quant string) bool {
	re := regexp.MustCompile(`(?i)(^|[^A-Za-z0-9_])` + regexp.QuoteMeta(quant) + `($|[^A-Za-z0-9_])`)
	return re.MatchString(strings.TrimSuffix(path.Base(file), path.Ext(file)))
}

// chooseModelFile picks the GGUF model file ref means from a listing: the
// one holding ref.Quant, or without a quant the only one, else Q4_K_M.
func chooseModelFile(ref hub.Ref, files []hub.RepoFile) (string, error) {
	var models []string
	for _, f := range files {
		if isGGUF(f.Path) && !isProjectorFile(f.Path) {
			models = append(models, f.Path)
		}
	}
	slices.Sort(models)
	label := "hf.co/" + ref.Repo
	if len(models) == 0 {
		var names []string
		for _, f := range files {
			names = append(names, f.Path)
		}
		return "", fmt.Errorf("%s: %w: no GGUF model files; name the file (hf.co/%s:FILE) among %s", label, ErrNoChoice, ref.Repo, listOf(names))
	}
	quant := ref.Quant
	candidates := models
	if quant != "" || len(models) > 1 {
		q := quant
		if q == "" {
			q = "Q4_K_M"
		}
		candidates = nil
		for _, m := range models {
			if quantMatches(m, q) {
				candidates = append(candidates, m)
			}
		}
	}
	switch {
	case len(candidates) == 1:
		if m := splitShard.FindStringSubmatch(candidates[0]); m != nil {
			return "", fmt.Errorf("%s: %w: %s is split into %s files; owl loads single-file GGUF models", label, ErrNoChoice, candidates[0], strings.TrimLeft(m[1], "0"))
		}
		return candidates[0], nil
	case len(candidates) > 1:
		return "", fmt.Errorf("%s: %w: %d files match %q: %s; name one with hf.co/%s:FILE", label, ErrNoChoice, len(candidates), quant, listOf(candidates), ref.Repo)
	case quant != "":
		return "", fmt.Errorf("%s: %w: no GGUF file has %q in its name; the repository has %s", label, ErrNoChoice, quant, listOf(models))
	}
	return "", fmt.Errorf("%s: %w: %d model files and no Q4_K_M among them; pick one with hf.co/%s:QUANT or :FILE from %s", label, ErrNoChoice, len(models), ref.Repo, listOf(models))
}

func listOf(names []string) string {
	const most = 12
	if len(names) > most {
		return strings.Join(names[:most], ", ") + fmt.Sprintf(" and %d more", len(names)-most)
	}
	return strings.Join(names, ", ")
}

// chooseProjector picks the projector for model from a listing: an
// mmproj*.gguf in the model's folder, preferring f16, then the model's own
// quantization, then the first by name. It returns "" when there is none.
func chooseProjector(files []hub.RepoFile, model string) string {
	var cands []string
	for _, f := range files {
		if isGGUF(f.Path) && isProjectorFile(f.Path) && path.Dir(f.Path) == path.Dir(model) {
			cands = append(cands, f.Path)
		}
	}
	if len(cands) == 0 {
		return ""
	}
	slices.Sort(cands)
	for _, pref := range []string{"f16", "F16"} {
		for _, c := range cands {
			if quantMatches(c, pref) {
				return c
			}
		}
	}
	for _, c := range cands {
		base := strings.TrimSuffix(path.Base(c), ".gguf")
		if i := strings.LastIndexAny(base, "-."); i >= 0 && quantMatches(model, base[i+1:]) {
			return c
		}
	}
	return cands[0]
}

// pullOffline finds what among the installed models, without the network.
func (s *Store) pullOffline(what string, opts PullOptions) ([]Pulled, error) {
	var repo, name string
	var match func(file string) bool
	if e, ok := LookupCatalog(what); ok {
		repo, name = e.Repo, e.Name
		match = func(f string) bool { return f == e.File }
	} else if hub.IsRef(what) {
		ref, err := hub.ParseRef(what)
		if err != nil {
			return nil, err
		}
		repo = ref.Repo
		switch {
		case ref.File != "":
			match = func(f string) bool { return f == ref.File }
		case ref.Quant != "":
			match = func(f string) bool { return quantMatches(f, ref.Quant) && !isProjectorFile(f) }
		default:
			match = func(f string) bool { return !isProjectorFile(f) }
		}
	} else {
		return nil, notPullable(what)
	}
	if opts.Name != "" {
		name = opts.Name
	}
	all, _ := s.List()
	var found []Entry
	for _, e := range all {
		if e.Source.Repo == repo && match(e.Source.File) && (name == "" || e.Name == name) {
			found = append(found, e)
		}
	}
	if len(found) != 1 {
		if len(found) > 1 {
			var names []string
			for _, e := range found {
				names = append(names, e.Name)
			}
			return nil, fmt.Errorf("%s: %w: installed as %s; use one of those names", what, ErrNoChoice, listOf(names))
		}
		return nil, fmt.Errorf("%s: %w (offline: OWL_OFFLINE or --offline)", what, ErrOffline)
	}
	out := []Pulled{{Entry: found[0], Action: UpToDate}}
	if p := found[0].Projector; p != "" && !opts.NoProjector {
		pe, err := s.Get(p)
		if err != nil {
			return nil, fmt.Errorf("%s: its projector: %w", what, err)
		}
		out = append(out, Pulled{Entry: pe, Action: UpToDate})
	}
	return out, nil
}

// sameContent reports whether the installed manifest m holds the file fi
// describes: the same sha256, or for files without one the same git blob.
func sameContent(m Manifest, fi hub.FileInfo) bool {
	if fi.SHA256 != "" {
		return m.SHA256 == fi.SHA256
	}
	return fi.ETag != "" && m.Source.ETag == fi.ETag
}

// downloadKey names a file's partial file and lock: its sha256 when the hub
// gives one, else its git blob id, else its URL's hash.
func downloadKey(fi hub.FileInfo) string {
	if fi.SHA256 != "" {
		return blobKey(fi.SHA256)
	}
	if regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(fi.ETag) {
		return "git-" + fi.ETag
	}
	sum := sha256.Sum256([]byte(fi.URL))
	return "url-" + hex.EncodeToString(sum[:16])
}

// fetch installs one file under t.name: unchanged, linked to a file the
// store has, or downloaded.
func (s *Store) fetch(ctx context.Context, c *hub.Client, t target, progress func(PullProgress)) (Pulled, error) {
	if err := ValidName(t.name); err != nil {
		return Pulled{}, fmt.Errorf("%s: %w", t.label(), err)
	}
	fi, err := c.Stat(ctx, t.repo, t.rev, t.file)
	if err != nil {
		return Pulled{}, err
	}
	label := fi.Label()
	old, _, oldErr := s.readManifest(t.name)
	if oldErr == nil && (old.Source.Repo != t.repo || old.Source.File != t.file) {
		return Pulled{}, fmt.Errorf("%w: %q holds %s; install %s under another name (--name) or remove it first (owl models rm %s)",
			ErrNameTaken, t.name, old.Source.Ref(), label, t.name)
	}
	if p, ok := s.upToDate(t, fi); ok {
		return p, nil
	}
	if err := s.ensure(); err != nil {
		return Pulled{}, err
	}
	key := downloadKey(fi)
	unlock, ok, err := s.tryLock(key)
	if err != nil {
		return Pulled{}, err
	}
	if !ok {
		if progress != nil {
			progress(PullProgress{Name: t.name, File: label, Total: fi.Size, Waiting: true})
		}
		if unlock, err = s.lock(ctx, key); err != nil {
			return Pulled{}, err
		}
	}
	defer unlock()
	// A pull that held the lock before may have installed it meanwhile.
	if p, ok := s.upToDate(t, fi); ok {
		return p, nil
	}
	if sha := s.knownBlob(fi); sha != "" {
		return s.install(t, fi, sha, false, Linked)
	}

	partial := filepath.Join(s.dir, "partial", key+".partial")
	var have int64
	if st, err := os.Stat(partial); err == nil {
		have = st.Size()
	}
	if fi.Size >= 0 {
		if err := s.checkSpace(label, fi.Size-min(have, fi.Size)); err != nil {
			return Pulled{}, err
		}
	}
	var report hub.Progress
	if progress != nil {
		report = func(done, total int64) {
			progress(PullProgress{Name: t.name, File: label, Done: done, Total: total, Resumed: min(have, done)})
		}
	}
	d, err := c.Download(ctx, fi, partial, report)
	if err != nil {
		return Pulled{}, err
	}
	kind, err := DetectKind(partial)
	if err == nil && t.want != "" && kind != t.want {
		err = fmt.Errorf("%w: it holds a %s where a %s belongs", ErrWrongKind, kind.Describe(), t.want.Describe())
	}
	if err != nil {
		os.Remove(partial)
		return Pulled{}, fmt.Errorf("%s: the download was discarded: %w", label, unwrapPath(err, partial))
	}
	action := Downloaded
	if d.Resumed > 0 {
		action = Resumed
	}
	// Until its manifest exists the blob is held by its lock too, so that
	// a concurrent removal does not collect it.
	if key != blobKey(d.SHA256) {
		unlockBlob, err := s.lock(ctx, blobKey(d.SHA256))
		if err != nil {
			return Pulled{}, err
		}
		defer unlockBlob()
	}
	if err := os.Rename(partial, s.blobPath(d.SHA256)); err != nil {
		return Pulled{}, fmt.Errorf("model store: %w", err)
	}
	return s.install(t, fi, d.SHA256, d.Verified, action)
}

// unwrapPath drops the partial file's name from an error about its
// content: the file is gone, the hub file's label says what it was.
func unwrapPath(err error, partial string) error {
	msg := strings.TrimPrefix(err.Error(), partial+": ")
	if msg == err.Error() {
		return err
	}
	return &prefixedError{msg: msg, err: err}
}

type prefixedError struct {
	msg string
	err error
}

func (e *prefixedError) Error() string { return e.msg }
func (e *prefixedError) Unwrap() error { return e.err }

// upToDate reports whether t is installed as fi describes, with the same
// projector pairing.
func (s *Store) upToDate(t target, fi hub.FileInfo) (Pulled, bool) {
	m, mod, err := s.readManifest(t.name)
	if err != nil || !sameContent(m, fi) || m.Projector != t.projector || m.Source.Repo != t.repo || m.Source.File != t.file {
		return Pulled{}, false
	}
	e, err := s.entry(m, mod)
	if err != nil {
		return Pulled{}, false
	}
	return Pulled{Entry: e, Action: UpToDate}, true
}

// knownBlob returns the sha256 of a blob the store holds with fi's content:
// fi's own sha256, or for a file without one an installed file with the
// same git blob id. It returns "" when there is none.
func (s *Store) knownBlob(fi hub.FileInfo) string {
	if fi.SHA256 != "" {
		if fileExists(s.blobPath(fi.SHA256)) {
			return fi.SHA256
		}
		return ""
	}
	if fi.ETag == "" {
		return ""
	}
	names, _ := s.names()
	for _, n := range names {
		m, _, err := s.readManifest(n)
		if err == nil && m.Source.ETag == fi.ETag && fileExists(s.blobPath(m.SHA256)) {
			return m.SHA256
		}
	}
	return ""
}

// install writes t's manifest for the blob sha, whose kind it reads again
// from the file.
func (s *Store) install(t target, fi hub.FileInfo, sha string, verified bool, action Action) (Pulled, error) {
	blob := s.blobPath(sha)
	kind, err := DetectKind(blob)
	if err == nil && t.want != "" && kind != t.want {
		err = fmt.Errorf("%w: it holds a %s where a %s belongs", ErrWrongKind, kind.Describe(), t.want.Describe())
	}
	if err != nil {
		return Pulled{}, fmt.Errorf("%s: %w", fi.Label(), err)
	}
	st, err := os.Stat(blob)
	if err != nil {
		return Pulled{}, err
	}
	if action == Linked && fi.SHA256 != "" {
		verified = true // the blob is named by the sha256 it was verified against
	} else if action == Linked {
		if old, _, err := s.readManifest(t.name); err == nil && old.SHA256 == sha {
			verified = old.Verified
		}
	}
	m := Manifest{Name: t.name, Kind: kind, SHA256: sha, Verified: verified, Size: st.Size(), Pulled: time.Now().UTC().Truncate(time.Second),
		Projector: t.projector,
		Source:    Source{Repo: fi.Repo, Revision: fi.Revision, Commit: fi.Commit, File: fi.Path, ETag: fi.ETag, URL: fi.URL}}
	if err := s.writeManifest(m); err != nil {
		return Pulled{}, err
	}
	e, err := s.Get(t.name)
	if err != nil {
		return Pulled{}, err
	}
	return Pulled{Entry: e, Action: action}, nil
}
