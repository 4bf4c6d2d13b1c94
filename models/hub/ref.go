package hub

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
)

// ErrBadRef is wrapped by every error about a malformed hub reference.
var ErrBadRef = errors.New("invalid hub reference")

// DefaultRevision is the branch files are taken from unless a reference
// names another.
const DefaultRevision = "main"

// Ref names a model on the hub, written
//
//	hf.co/ORG/REPO[@REVISION][:FILE or :QUANT]
//
// (huggingface.co/ and https:// prefixes are accepted too). FILE is a path in
// the repository (ggml-base.en.bin, sub/model.gguf); QUANT picks the GGUF
// file whose name contains it (Q4_K_M). Without either, the repository's
// only model file is meant.
type Ref struct {
	Repo     string // "ORG/REPO"
	Revision string // branch, tag or commit; DefaultRevision when not given
	File     string // a path in the repository, or ""
	Quant    string // a quantization to choose the file by, or ""
}

// String writes r back in the form ParseRef reads.
func (r Ref) String() string {
	s := "hf.co/" + r.Repo
	if r.Revision != "" && r.Revision != DefaultRevision {
		s += "@" + r.Revision
	}
	switch {
	case r.File != "":
		s += ":" + r.File
	case r.Quant != "":
		s += ":" + r.Quant
	}
	return s
}

var refPrefixes = []string{"https://hf.co/", "https://huggingface.co/", "hf.co/", "huggingface.co/"}

// IsRef reports whether s is written as a hub reference (starts with hf.co/
// or huggingface.co/), whether or not it is a valid one.
func IsRef(s string) bool {
	for _, p := range refPrefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

var (
	// A repository's owner or name, as the hub allows them.
	repoPart = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$`)
	revision = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$`)
	quant    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	// Extensions of model files: a selector ending in one is a file name.
	modelExts = []string{".gguf", ".bin", ".ggml"}
)

// ParseRef parses a hub reference; see Ref for the form.
func ParseRef(s string) (Ref, error) {
	bad := func(format string, args ...any) (Ref, error) {
		return Ref{}, fmt.Errorf("%w %q: %s", ErrBadRef, s, fmt.Sprintf(format, args...))
	}
	rest, ok := "", false
	for _, p := range refPrefixes {
		if r, found := strings.CutPrefix(s, p); found {
			rest, ok = r, true
			break
		}
	}
	if !ok {
		return bad("want hf.co/ORG/REPO[:FILE or :QUANT]")
	}
	repoRev, sel, _ := strings.Cut(rest, ":")
	repo, rev, hasRev := strings.Cut(repoRev, "@")
	owner, name, found := strings.Cut(repo, "/")
	if !found || strings.Contains(name, "/") {
		return bad("want ORG/REPO after hf.co/")
	}
	for _, part := range []string{owner, name} {
		if !repoPart.MatchString(part) || strings.Contains(part, "..") || strings.Contains(part, "--") {
			return bad("%q is not a repository owner or name (letters, digits, '.', '_', '-')", part)
		}
	}
	r := Ref{Repo: repo, Revision: DefaultRevision}
	if hasRev {
		if !revision.MatchString(rev) || strings.Contains(rev, "..") || strings.HasSuffix(rev, "/") {
			return bad("revision %q is not a branch, tag or commit", rev)
		}
		r.Revision = rev
	}
	switch {
	case sel == "" || sel == "latest":
	case isFileSelector(sel):
		if err := CheckPath(sel); err != nil {
			return bad("%v", err)
		}
		r.File = sel
	case quant.MatchString(sel):
		r.Quant = sel
	default:
		return bad("%q is neither a file in the repository nor a quantization like Q4_K_M", sel)
	}
	return r, nil
}

func isFileSelector(sel string) bool {
	if strings.ContainsAny(sel, "/.\\") {
		return true
	}
	for _, ext := range modelExts {
		if strings.HasSuffix(strings.ToLower(sel), ext) {
			return true
		}
	}
	return false
}

// CheckPath refuses a repository file path that could name something
// outside the repository or confuse a URL: absolute paths, ".." or empty
// segments, backslashes and control characters.
func CheckPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty file path")
	case len(p) > 1024:
		return fmt.Errorf("file path of %d bytes", len(p))
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("file path %q is absolute", p)
	case strings.ContainsAny(p, "\\?#"):
		return fmt.Errorf("file path %q holds '\\', '?' or '#'", p)
	}
	for _, c := range p {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("file path %q holds a control character", p)
		}
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("file path %q has an empty, '.' or '..' segment", p)
		}
	}
	if path.Clean(p) != p {
		return fmt.Errorf("file path %q is not clean", p)
	}
	return nil
}
