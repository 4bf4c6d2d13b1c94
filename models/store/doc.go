// Package store keeps the models owl has downloaded: one folder (see
// DefaultDir) holding a JSON manifest per installed model and the model
// files themselves, stored once each under their sha256.
//
//	$OWL_MODELS (default ~/.owl/models)
//	  manifests/NAME.json   what NAME is: kind, source, sha256, size, projector
//	  blobs/sha256-HEX      a verified model file
//	  partial/KEY.partial   a download under way or interrupted; resumed later
//	  locks/KEY.lock        held (flock) by the pull writing KEY
//
// A name is what users type after -m ("whisper:base.en", "smolvlm:500m",
// "SmolVLM-500M-Instruct-Q8_0"); ValidName keeps it from naming anything
// outside the folder. A model's kind (text model, projector, whisper,
// Silero VAD) is read from the file's content, never from its name.
//
// Pull fetches a catalog name or a hub reference (hf.co/ORG/REPO[:FILE or
// :QUANT]) through package models/hub: the download resumes a partial file
// left by an earlier one, is verified against the hub's sha256 when the hub
// gives one, is checked to be a model, and is renamed into place only then,
// so a store never holds a half-written or unverified file under a name.
// Two pulls of the same file, in one process or two, take turns on its lock
// file; the second finds the first's result and reuses it.
package store
