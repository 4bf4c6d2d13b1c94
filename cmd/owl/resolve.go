package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/owlengine/owl/models/hub"
	"github.com/owlengine/owl/models/store"
)

// resolveModel turns the value of -m (or --vad-model) into a model file's
// path, through the store's one resolver (store.Resolve): a file that
// exists wins; otherwise a store name, a model file lying in the store's
// folder, or a hub reference a model was pulled from (hf.co/ORG/REPO:QUANT).
// A value that looks like a file path and names nothing is returned as it
// is, for the command to report as missing.
func resolveModel(arg string) (string, error) {
	path, _, err := resolveWithProjector(arg)
	return path, err
}

// resolveWithProjector is resolveModel, also returning the projector the
// store paired with the model ("" for a file given by path, or a model
// without one).
func resolveWithProjector(arg string) (path, projector string, err error) {
	if arg == "" {
		return "", "", nil
	}
	st, err := store.OpenDefault()
	if err != nil {
		return "", "", err
	}
	m, err := st.Resolve(arg, store.ResolveOptions{AnyFile: true})
	switch {
	case err == nil:
		return m.Path, m.ProjectorPath, nil
	case errors.Is(err, store.ErrNotFound) && (looksLikeFile(arg) || strings.ContainsAny(arg, `/\`)):
		return arg, "", nil
	case errors.Is(err, store.ErrNotFound) && hub.IsRef(arg):
		return "", "", fmt.Errorf("%s: not in the model store (%s); owl pull %s downloads it", arg, st.Dir(), arg)
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrBadName):
		hint := "owl models ls lists the installed models, owl models catalog the ones owl pull knows by name"
		if _, ok := store.LookupCatalog(arg); ok {
			hint = "owl pull " + arg + " downloads it"
		}
		return "", "", fmt.Errorf("%s: no such file, and no model of that name in the store (%s); %s", arg, st.Dir(), hint)
	}
	return "", "", err
}

func looksLikeFile(arg string) bool {
	lower := strings.ToLower(arg)
	return strings.HasSuffix(lower, ".gguf") || strings.HasSuffix(lower, ".bin") || strings.HasSuffix(lower, ".onnx")
}

// resolveModels resolves each of the -m style values in place.
func resolveModels(args ...*string) error {
	for _, a := range args {
		p, err := resolveModel(*a)
		if err != nil {
			return err
		}
		*a = p
	}
	return nil
}
