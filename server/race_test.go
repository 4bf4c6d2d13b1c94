//go:build race

package server

// raceEnabled: the race detector slows everything several times over, so
// the bounds on time are not checked under it.
const raceEnabled = true
