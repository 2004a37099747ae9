//go:build !linux

package delaylink

import (
	"errors"
	"os"
)

// errLinuxOnly is returned on other platforms: TUN devices and network
// namespaces are set up with Linux interfaces.
var errLinuxOnly = errors.New("delaylink: TUN devices in network namespaces need Linux")

// InNetns needs Linux.
func InNetns(nsPath string, f func() error) error { return errLinuxOnly }

// OpenTUN needs Linux.
func OpenTUN(nsPath, name string) (*os.File, error) { return nil, errLinuxOnly }
