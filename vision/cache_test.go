package vision

import (
	"fmt"
	"sync"
	"testing"
)

func key(i int) CacheKey {
	return CacheKey{Image: HashRGB(1, 1, []byte{byte(i), byte(i >> 8), 0}), Projector: "p"}
}

func TestEmbeddingCacheLRU(t *testing.T) {
	c := NewEmbeddingCache[[]float32](300)
	for i := range 3 {
		if !c.Put(key(i), []float32{float32(i)}, 100) {
			t.Fatalf("entry %d not kept", i)
		}
	}
	if _, ok := c.Get(key(0)); !ok { // 0 is now the most recently used
		t.Fatal("entry 0 missing")
	}
	c.Put(key(3), []float32{3}, 100) // evicts 1, the least recently used
	if _, ok := c.Get(key(1)); ok {
		t.Fatal("entry 1 should have been evicted")
	}
	for _, i := range []int{0, 2, 3} {
		v, ok := c.Get(key(i))
		if !ok || v[0] != float32(i) {
			t.Fatalf("entry %d: %v %v", i, v, ok)
		}
	}
	s := c.Stats()
	if s.Hits != 4 || s.Misses != 1 || s.Evictions != 1 || s.Entries != 3 || s.Bytes != 300 || s.MaxBytes != 300 {
		t.Fatalf("stats %+v", s)
	}

	// A large entry evicts as many as it needs.
	c.Put(key(4), nil, 250)
	if s := c.Stats(); s.Entries != 1 || s.Bytes != 250 || s.Evictions != 4 {
		t.Fatalf("after a large entry: %+v", s)
	}
	// Too large to keep at all: refused, and the cache is unchanged.
	if c.Put(key(5), nil, 301) {
		t.Fatal("an entry over the bound was kept")
	}
	// Replacing an entry replaces its size.
	c.Put(key(4), nil, 10)
	if s := c.Stats(); s.Entries != 1 || s.Bytes != 10 {
		t.Fatalf("after replacing: %+v", s)
	}
	c.Remove(key(4))
	if s := c.Stats(); s.Entries != 0 || s.Bytes != 0 {
		t.Fatalf("after removing: %+v", s)
	}
	// Keys differ by projector and part.
	k := key(7)
	c.Put(k, []float32{1}, 1)
	for _, other := range []CacheKey{{Image: k.Image, Projector: "q"}, {Image: k.Image, Projector: "p", Part: 1}} {
		if _, ok := c.Get(other); ok {
			t.Fatalf("%+v found under %+v", other, k)
		}
	}
}

func TestEmbeddingCacheConcurrent(t *testing.T) {
	c := NewEmbeddingCache[int](1000)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				k := key((g*500 + i) % 64)
				if v, ok := c.Get(k); ok && v != (g*500+i)%64 {
					panic(fmt.Sprintf("key %v holds %d", k, v))
				}
				c.Put(k, (g*500+i)%64, 37)
			}
		})
	}
	wg.Wait()
	s := c.Stats()
	if s.Bytes > 1000 || s.Bytes != int64(s.Entries)*37 || s.Hits+s.Misses != 8*500 {
		t.Fatalf("stats %+v", s)
	}
}

func BenchmarkEmbeddingCache(b *testing.B) {
	c := NewEmbeddingCache[[]float32](1 << 20)
	v := make([]float32, 16)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := key(i % 512)
		if _, ok := c.Get(k); !ok {
			c.Put(k, v, 4096)
		}
		i++
	}
}
