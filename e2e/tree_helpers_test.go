package e2e

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Helpers of the process-tree tests: the mechanism under test, processes
// found by a marker in their environment, cgroups found from /proc.

// treeMode is how the supervisor under test keeps its process trees.
type treeMode struct {
	name   string
	env    []string // for the supervisor
	cgroup bool
}

var treeModes = []treeMode{
	{name: "cgroup", cgroup: true},
	{name: "process group", env: []string{"LAUNCHER_TEST_PROCESS_GROUPS=1"}},
}

// forEachTreeMode runs f as a subtest per mechanism.
func forEachTreeMode(t *testing.T, f func(t *testing.T, m treeMode)) {
	for _, m := range treeModes {
		t.Run(m.name, func(t *testing.T) { f(t, m) })
	}
}

// checkTreeMode checks that the supervisor uses m's mechanism, as its log
// says once at start. A machine where cgroups cannot be used skips the
// cgroup runs (fails them under CI).
func checkTreeMode(t *testing.T, s *sup, m treeMode) {
	t.Helper()
	log := s.log.String()
	switch {
	case m.cgroup && strings.Contains(log, "process trees: process groups"):
		if os.Getenv("CI") == "true" {
			t.Fatalf("no cgroup v2 for the supervisor (needs root or a delegated cgroup):\n%s", log)
		}
		t.Skip("no cgroup v2 the supervisor may create cgroups in (needs root or a delegated cgroup)")
	case m.cgroup && !strings.Contains(log, "process trees: cgroup v2"):
		t.Errorf("supervisor log does not say it uses cgroups")
	case !m.cgroup && !strings.Contains(log, "process trees: process groups"):
		t.Errorf("supervisor log does not say it uses process groups")
	}
}

// treeMarker returns a value unique to this test, which a release script
// exports as TREE_MARK to every process it starts; cleanup kills any such
// process left.
func treeMarker(t *testing.T) string {
	t.Helper()
	m := fmt.Sprintf("%s-%d", strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()), time.Now().UnixNano())
	t.Cleanup(func() {
		for _, pid := range marked(m) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return m
}

// marked returns the live processes whose environment has TREE_MARK=mark.
func marked(mark string) []int {
	var out []int
	envs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, path := range envs {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(string(b), "\x00") {
			if kv == "TREE_MARK="+mark {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
				if alive(pid) {
					out = append(out, pid)
				}
				break
			}
		}
	}
	return out
}

// noneMarked fails t if a process of mark is alive.
func noneMarked(t *testing.T, mark, when string) {
	t.Helper()
	if left := marked(mark); len(left) > 0 {
		t.Errorf("%s: processes of the tree left: %s", when, describe(left))
	}
}

// describe lists pids with their command names and parents.
func describe(pids []int) string {
	var parts []string
	for _, pid := range pids {
		parts = append(parts, fmt.Sprintf("%d (%s, parent %d)", pid, comm(pid), parent(pid)))
	}
	return strings.Join(parts, ", ")
}

func parent(pid int) int {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	s := string(b)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return 0
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// cgroupDir returns the directory of pid's cgroup v2, "" if unknown.
func cgroupDir(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rel, ok := strings.CutPrefix(line, "0::"); ok {
			if mnt := cgroup2Mount(); mnt != "" {
				return filepath.Join(mnt, rel)
			}
		}
	}
	return ""
}

// cgroup2Mount returns where the cgroup v2 hierarchy is mounted.
func cgroup2Mount() string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if ok && strings.HasPrefix(post, "cgroup2 ") {
			if f := strings.Fields(pre); len(f) >= 5 {
				return f[4]
			}
		}
	}
	return ""
}

// workerCgroup returns the cgroup of worker pid of generation gen, checked
// to be the worker's own (…/gen-GEN/worker-…) when m uses cgroups; "" when
// it uses process groups.
func workerCgroup(t *testing.T, m treeMode, pid, gen int) string {
	t.Helper()
	if !m.cgroup {
		return ""
	}
	dir := cgroupDir(pid)
	if filepath.Base(filepath.Dir(dir)) != "gen-"+strconv.Itoa(gen) || !strings.HasPrefix(filepath.Base(dir), "worker-") {
		t.Errorf("worker %d of generation %d is in cgroup %q; want …/gen-%d/worker-…", pid, gen, dir, gen)
		return ""
	}
	return dir
}

// gone fails t if the cgroup dir (and its generation's) still exist.
func gone(t *testing.T, dir string) {
	t.Helper()
	if dir == "" {
		return
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup %s not removed", d)
		}
	}
}
