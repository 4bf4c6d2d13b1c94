//go:build unix

package portaudio

import (
	"os"

	"golang.org/x/sys/unix" // Dup2 on every unix (linux/arm64 has only dup3)
)

// muteStderr points file descriptor 2 at /dev/null until the returned
// function restores it.
func muteStderr() func() {
	saved, err := unix.Dup(2)
	if err != nil {
		return func() {}
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		unix.Close(saved)
		return func() {}
	}
	unix.Dup2(int(null.Fd()), 2)
	return func() {
		unix.Dup2(saved, 2)
		unix.Close(saved)
		null.Close()
	}
}
