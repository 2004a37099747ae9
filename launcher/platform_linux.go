package launcher

import (
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// checkPlatform returns nil: the launcher runs on Linux.
func checkPlatform(what string) error { return nil }

// redirectStderr makes f this process's stderr (file descriptor 2), so
// that log lines written there from now on go to f.
func redirectStderr(f *os.File) error { return unix.Dup3(int(f.Fd()), 2, 0) }

// ownProcessGroup makes cmd's process lead a process group of its own, so
// that killProcessGroup reaches whatever it starts too (a release that is
// a shell script running the app without exec).
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killProcessGroup kills every process of the group cmd's process leads
// (kill(2) with the negated group id); a process that left the group
// (setsid, setpgid) is not reached.
func killProcessGroup(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}
