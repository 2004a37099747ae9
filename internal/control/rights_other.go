//go:build !unix

package control

import (
	"errors"
	"os"
)

// Passing a file over a Unix socket (SCM_RIGHTS) needs a Unix system;
// this file only lets the package build elsewhere.

const rightsSpace = 0

func rights(f *os.File) ([]byte, error) {
	return nil, errors.New("passing a file over a Unix socket needs a Unix system")
}

func parseRights(oob []byte) *os.File { return nil }
