package testmodel

// rng is splitmix64: tiny, fast and fully specified, so generated weights are
// the same bytes on every platform and Go version.
type rng struct{ s uint64 }

func newRNG(seed uint64) *rng { return &rng{s: seed} }

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// uniform returns a float32 uniformly distributed in [-a, a).
func (r *rng) uniform(a float32) float32 {
	u := float32(r.next()>>40) / float32(1<<24) // [0, 1)
	return (2*u - 1) * a
}

// seedFor derives an independent stream for a named tensor, so that one
// tensor's values do not depend on which tensors were written before it.
func seedFor(seed uint64, name string) uint64 {
	h := uint64(1469598103934665603)
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	return h ^ (seed * 0x9e3779b97f4a7c15)
}
