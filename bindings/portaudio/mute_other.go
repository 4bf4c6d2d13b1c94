//go:build !unix

package portaudio

func muteStderr() func() { return func() {} }
