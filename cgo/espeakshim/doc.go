// Package espeakshim compiles owl's C glue over libespeak-ng (Debian's
// libespeak-ng-dev): one call synthesizes a whole text into a buffer the
// caller frees, one phonemizes a clause and says where it ended. The
// package has no Go API; bindings/espeak includes the header and imports
// this package for its object code.
package espeakshim

// #cgo pkg-config: espeak-ng
import "C"
