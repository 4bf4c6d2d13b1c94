package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/owlengine/owl/models/hub"
	"github.com/owlengine/owl/models/store"
)

// resolveModel turns the value of -m (or --vad-model) into a model file's
// path. A file that exists wins; otherwise the name is looked up in the
// model store, as a store name ("whisper:base.en") or a hub reference it
// was pulled from (hf.co/ORG/REPO:QUANT). A value that looks like a file
// path is returned as it is, for the command to report as missing.
func resolveModel(arg string) (string, error) {
	path, _, err := resolveWithProjector(arg)
	return path, err
}

// resolveWithProjector is resolveModel, also returning the projector the
// store paired with the model ("" for a file, or a model without one).
func resolveWithProjector(arg string) (path, projector string, err error) {
	if arg == "" {
		return "", "", nil
	}
	if _, err := os.Stat(arg); err == nil {
		return arg, "", nil
	}
	isRef := hub.IsRef(arg)
	if !isRef && (store.ValidName(arg) != nil || looksLikeFile(arg)) {
		return arg, "", nil
	}
	st, err := store.OpenDefault()
	if err != nil {
		return "", "", err
	}
	if isRef {
		pulled, err := st.Pull(context.Background(), nil, arg, store.PullOptions{Offline: true})
		if err != nil {
			if errors.Is(err, store.ErrOffline) {
				return "", "", fmt.Errorf("%s: not in the model store (%s); owl pull %s downloads it", arg, st.Dir(), arg)
			}
			return "", "", err
		}
		return pulled[0].Path, pulled[0].ProjectorPath, nil
	}
	e, err := st.Get(arg)
	switch {
	case err == nil:
		return e.Path, e.ProjectorPath, nil
	case errors.Is(err, store.ErrNotFound):
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
	return strings.HasSuffix(lower, ".gguf") || strings.HasSuffix(lower, ".bin")
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
