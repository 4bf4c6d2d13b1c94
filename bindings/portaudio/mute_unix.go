//go:build unix

package portaudio

import (
	"os"
	"syscall"
)

// muteStderr points file descriptor 2 at /dev/null until the returned
// function restores it.
func muteStderr() func() {
	saved, err := syscall.Dup(2)
	if err != nil {
		return func() {}
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		syscall.Close(saved)
		return func() {}
	}
	syscall.Dup2(int(null.Fd()), 2)
	return func() {
		syscall.Dup2(saved, 2)
		syscall.Close(saved)
		null.Close()
	}
}
