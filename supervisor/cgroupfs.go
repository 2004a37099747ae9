package supervisor

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Reading the cgroup v2 filesystem and /proc, for cgroups.

// treeRSS sums the resident set sizes of the processes in the cgroup dir
// and below it.
func treeRSS(dir string) int64 {
	page := int64(os.Getpagesize())
	var sum int64
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "cgroup.procs" {
			return nil
		}
		procs, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, pid := range strings.Fields(string(procs)) {
			// statm: size resident shared … in pages.
			if f := strings.Fields(readString("/proc/" + pid + "/statm")); len(f) > 1 {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				sum += n * page
			}
		}
		return nil
	})
	return sum
}

func readString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// statField returns the value of key in a flat-keyed cgroup file such as
// cpu.stat.
func statField(s, key string) (int64, bool) {
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// cgroup2Mount returns where the cgroup v2 hierarchy is mounted:
// /sys/fs/cgroup on a pure v2 system, /sys/fs/cgroup/unified in systemd's
// hybrid layout; "" if nowhere.
func cgroup2Mount() string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS…] - FSTYPE SOURCE OPTIONS
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f := strings.Fields(pre)
		if ok && strings.HasPrefix(post, "cgroup2 ") && len(f) >= 5 && f[3] == "/" {
			return unescapeMount(f[4])
		}
	}
	return ""
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ownCgroup returns the supervisor's cgroup v2, relative to the
// hierarchy's root.
func ownCgroup() (string, error) {
	rel, err := cgroupOf(os.Getpid())
	if err != nil {
		return "", err
	}
	// Outside the hierarchy's part this cgroup namespace sees.
	if strings.HasPrefix(rel, "/..") {
		return "", fmt.Errorf("own cgroup %s is outside this cgroup namespace", rel)
	}
	return rel, nil
}

// cgroupOf returns pid's cgroup v2 ("0::/path" in /proc/PID/cgroup).
func cgroupOf(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rel, ok := strings.CutPrefix(line, "0::"); ok && strings.HasPrefix(rel, "/") {
			return strings.TrimSuffix(rel, " (deleted)"), nil
		}
	}
	return "", fmt.Errorf("pid %d is in no cgroup v2", pid)
}
