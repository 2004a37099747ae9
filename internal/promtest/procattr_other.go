//go:build !linux

package promtest

import "syscall"

// sysProcAttr returns nil: only Linux can tie a child's life to its parent,
// so elsewhere a test killed by a timeout may leave prometheus running.
func sysProcAttr() *syscall.SysProcAttr { return nil }
