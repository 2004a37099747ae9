//go:build unix

package control

import (
	"os"

	"golang.org/x/sys/unix"
)

// rightsSpace is room for the control message of up to four descriptors:
// SendFile sends one; more are closed.
var rightsSpace = unix.CmsgSpace(4 * 4)

// rights returns the SCM_RIGHTS control message that passes f.
func rights(f *os.File) ([]byte, error) { return unix.UnixRights(int(f.Fd())), nil }

// parseRights returns the first file passed in oob, nil if none, and
// closes any others.
func parseRights(oob []byte) *os.File {
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var f *os.File
	for _, cm := range cmsgs {
		fds, err := unix.ParseUnixRights(&cm)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if f == nil {
				f = os.NewFile(uintptr(fd), "control-file")
			} else {
				unix.Close(fd) // more than asked for
			}
		}
	}
	return f
}
