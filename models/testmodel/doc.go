// Package testmodel writes deterministic models with seeded random weights in
// real file formats, so that tests and benchmarks run without downloads.
//
// Random weights produce meaningless text; tests use these models to prove
// properties that hold whatever the weights are (determinism, batched equals
// unbatched, cached equals uncached, a network equals its plain-Go oracle).
// Every generator is a pure function of its Config: the same Config gives the
// same bytes on every machine.
package testmodel
