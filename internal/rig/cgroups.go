package rig

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"time"
)

// RemoveCgroups removes the cgroups of the supervisor of stateDir (see
// supervisor's cgroupName: launcher-NAME-HASH, HASH from the path), its
// generations' and their workers', deepest first, and returns those it
// found. A worker killed a moment ago may still hold its own: it tries
// for 2 s.
func RemoveCgroups(stateDir string) []string {
	sum := sha256.Sum256([]byte(stateDir))
	var left []string
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		bases, _ := filepath.Glob(filepath.Join(root, "launcher-*-"+hex.EncodeToString(sum[:4])))
		for _, b := range bases {
			gens, _ := filepath.Glob(filepath.Join(b, "gen-*"))
			left = append(append(left, b), gens...)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for i := len(left) - 1; i >= 0; i-- {
		workers, _ := filepath.Glob(filepath.Join(left[i], "worker-*"))
		for _, d := range append(workers, left[i]) {
			for {
				err := os.Remove(d)
				if err == nil || errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	return left
}
