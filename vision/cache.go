package vision

import (
	"container/list"
	"sync"
)

// CacheKey names one cached projector output: the image, the projector that
// encoded it (a model identity chosen by the caller, since two projectors make
// different embeddings of one image) and the part of the image (projectors
// that cut an image into tiles encode each tile separately; 0 otherwise).
type CacheKey struct {
	Image     Hash
	Projector string
	Part      int
}

// CacheStats are an EmbeddingCache's counters.
type CacheStats struct {
	Hits      uint64 // Get calls that found their key
	Misses    uint64 // Get calls that did not
	Evictions uint64 // entries dropped to make room
	Entries   int    // entries held now
	Bytes     int64  // bytes held now, as given to Put
	MaxBytes  int64  // the bound
}

// EmbeddingCache keeps projector outputs (image embeddings) so that an image
// seen again is not encoded again. It is bounded in bytes and drops the
// least recently used entries first. Its methods may be called from many
// goroutines at once. Values are shared, not copied: callers must not modify
// a value after Put or one returned by Get.
type EmbeddingCache[V any] struct {
	mu      sync.Mutex // guards every field below
	max     int64
	bytes   int64
	order   *list.List // of *cacheEntry[V], most recently used at the front
	entries map[CacheKey]*list.Element
	stats   CacheStats
}

type cacheEntry[V any] struct {
	key   CacheKey
	value V
	size  int64
}

// NewEmbeddingCache returns a cache holding at most maxBytes; a value
// larger than that is never kept.
func NewEmbeddingCache[V any](maxBytes int64) *EmbeddingCache[V] {
	return &EmbeddingCache[V]{max: max(maxBytes, 0), order: list.New(), entries: map[CacheKey]*list.Element{}}
}

// Get returns the value stored under k and marks it recently used.
func (c *EmbeddingCache[V]) Get(k CacheKey) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[k]; ok {
		c.order.MoveToFront(e)
		c.stats.Hits++
		return e.Value.(*cacheEntry[V]).value, true
	}
	c.stats.Misses++
	var zero V
	return zero, false
}

// Put stores v, which takes size bytes, under k, replacing what k held, and
// evicts least recently used entries until the cache fits its bound. It
// reports whether v was kept (false when size alone exceeds the bound).
func (c *EmbeddingCache[V]) Put(k CacheKey, v V, size int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[k]; ok {
		c.remove(e)
	}
	if size < 0 || size > c.max {
		return false
	}
	for c.bytes+size > c.max {
		c.remove(c.order.Back())
		c.stats.Evictions++
	}
	c.entries[k] = c.order.PushFront(&cacheEntry[V]{key: k, value: v, size: size})
	c.bytes += size
	return true
}

// Remove drops the entry under k, if any.
func (c *EmbeddingCache[V]) Remove(k CacheKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[k]; ok {
		c.remove(e)
	}
}

// remove unlinks e; c.mu is held.
func (c *EmbeddingCache[V]) remove(e *list.Element) {
	ent := c.order.Remove(e).(*cacheEntry[V])
	delete(c.entries, ent.key)
	c.bytes -= ent.size
}

// Stats returns the cache's counters.
func (c *EmbeddingCache[V]) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Entries = len(c.entries)
	s.Bytes = c.bytes
	s.MaxBytes = c.max
	return s
}
