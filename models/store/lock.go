package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// lockPoll is how often a pull waiting for another one's lock looks again.
const lockPoll = 50 * time.Millisecond

func blobKey(sha string) string { return "sha256-" + sha }

// lock takes the exclusive lock of key (an flock on locks/KEY.lock), which
// other processes honour too, waiting for it until ctx is done. Locks are
// per open file, so two goroutines of one process exclude each other as
// well. The returned function releases it.
func (s *Store) lock(ctx context.Context, key string) (func(), error) {
	for {
		unlock, ok, err := s.tryLock(key)
		if err != nil || ok {
			return unlock, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(lockPoll):
		}
	}
}

// tryLock takes key's lock if it is free.
func (s *Store) tryLock(key string) (unlock func(), ok bool, err error) {
	dir := filepath.Join(s.dir, "locks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, false, fmt.Errorf("model store: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, key+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false, fmt.Errorf("model store: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("model store: locking %s: %w", f.Name(), err)
	}
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, true, nil
}
