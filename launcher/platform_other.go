//go:build !linux

package launcher

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
)

// The launcher steers a reuseport group with a classic BPF program and
// reads accept queues and handshakes from the Linux kernel, so it runs on
// Linux only. This file lets an app that imports the package build on a
// developer's laptop: New and Listen return ErrNotSupported there.

// checkPlatform returns ErrNotSupported wrapped with what and the system.
func checkPlatform(what string) error {
	return fmt.Errorf("launcher: %s on %s: %w", what, runtime.GOOS, ErrNotSupported)
}

func redirectStderr(f *os.File) error { return errors.ErrUnsupported }

func ownProcessGroup(*exec.Cmd) {}

func killProcessGroup(cmd *exec.Cmd) { cmd.Process.Kill() }
