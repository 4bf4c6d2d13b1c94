package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrNoSpace: the disk holding the store has less room than a download needs.
var ErrNoSpace = errors.New("not enough disk space")

// freeSpace is the bytes an unprivileged user may still write on the file
// system that holds dir (or its nearest existing parent).
func freeSpace(dir string) (uint64, error) {
	for {
		var st unix.Statfs_t
		err := unix.Statfs(dir, &st)
		if err == nil {
			return st.Bavail * uint64(st.Bsize), nil
		}
		parent := filepath.Dir(dir)
		if !errors.Is(err, os.ErrNotExist) || parent == dir {
			return 0, fmt.Errorf("free space of %s: %w", dir, err)
		}
		dir = parent
	}
}

// checkSpace refuses a download of need more bytes when the store's disk
// has fewer free.
func (s *Store) checkSpace(label string, need int64) error {
	if need <= 0 {
		return nil
	}
	free, err := s.freeSpace(s.dir)
	if err != nil {
		return err
	}
	if uint64(need) > free {
		return fmt.Errorf("%w for %s: it needs %d more bytes (%s), %s has %d free (%s)",
			ErrNoSpace, label, need, FormatBytes(uint64(need)), s.dir, free, FormatBytes(free))
	}
	return nil
}

// FormatBytes writes n in binary units: "512 B", "1.5 KiB", "3.2 GiB".
func FormatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
