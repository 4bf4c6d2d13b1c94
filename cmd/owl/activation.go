package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

// inheritedListener returns the listening socket a service manager handed
// over by socket activation (systemd's protocol: LISTEN_PID names this
// process, LISTEN_FDS counts the sockets from file descriptor 3 on), or
// nil when there is none. A socket held by the service manager stays open
// while owl restarts, so that clients connecting meanwhile wait in its
// backlog instead of being refused.
func inheritedListener() (net.Listener, error) {
	pid, err := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if err != nil || pid != os.Getpid() {
		return nil, nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 1 {
		return nil, nil
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v) // not for the processes owl starts
	}
	if n != 1 {
		return nil, fmt.Errorf("the service manager passed %d sockets; owl serve listens on one (one ListenStream= in the socket unit)", n)
	}
	const fd = 3
	syscall.CloseOnExec(fd)
	f := os.NewFile(fd, "activation socket")
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("the socket the service manager passed: %w", err)
	}
	return ln, nil
}
