package promtest

import "syscall"

// sysProcAttr asks Linux to kill prometheus if the test process dies first
// (a test timeout panics and skips cleanups), so no server outlives its
// test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
