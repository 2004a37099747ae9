package reuseport

import (
	"fmt"
	"os"
	"strings"
)

// migrateReqPath is the per-network-namespace switch (Linux ≥ 5.14) that
// makes the kernel move the queued and half-open connections of a closing
// listener to another socket of its reuseport group.
const migrateReqPath = "/proc/sys/net/ipv4/tcp_migrate_req"

// MigrateReq reports whether net.ipv4.tcp_migrate_req is 1 in this
// process's network namespace. It never changes the setting: that is the
// operator's (it needs privilege and applies to the whole namespace).
func MigrateReq() (bool, error) {
	b, err := os.ReadFile(migrateReqPath)
	if err != nil {
		return false, fmt.Errorf("read %s (Linux ≥ 5.14): %w", migrateReqPath, err)
	}
	return strings.TrimSpace(string(b)) == "1", nil
}
