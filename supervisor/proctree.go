package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A worker's process tree: the worker and whatever it starts. A release
// that is a shell script runs the app or a helper as a child; an app runs
// commands. All of it belongs to the worker's generation and ends with it,
// on every path: a kill (ready timeout, failed health check, drain
// timeout, an aborted upgrade, a stop's deadline) ends the whole tree, and
// a worker's exit (a crash, the end of its drain) kills what it left, so
// that a crashed script's app cannot serve on unknown to the supervisor.
//
// Two mechanisms hold a tree (see cgroups): a cgroup v2 of the worker's
// own, which holds every process it starts whatever they do, and
// otherwise its process group (workers start with Setpgid), which holds
// the children that do not leave it: one that calls setsid or setpgid, as
// a daemon does, escapes.

// treeWait bounds how long a worker's exit waits for what is left of its
// tree to die once killed. SIGKILL takes effect within milliseconds; only a
// process stuck in the kernel (uninterruptible I/O) takes longer.
const treeWait = 5 * time.Second

// tree is one worker's process tree.
type tree interface {
	// kill sends SIGKILL to every process of the tree.
	kill() error
	// finish, once the worker has exited, kills what is left of the tree,
	// waits up to treeWait until nothing is, and removes what held it.
	finish() error
	// frozen reports whether the tree is frozen (cgroup.freeze): its
	// processes run nothing, as stopped ones, though /proc calls them
	// sleeping.
	frozen() bool
	String() string
}

// cgroupTree is a worker's own cgroup v2: every process it starts is in
// it, and cgroup.kill (Linux 5.14) ends them all at once.
type cgroupTree struct{ dir string }

func (c cgroupTree) String() string { return "cgroup " + c.dir }

// frozen reads the cgroup's "frozen" key in cgroup.events: 1 once every
// process of it is frozen (Documentation/admin-guide/cgroup-v2.rst).
func (c cgroupTree) frozen() bool {
	b, err := os.ReadFile(filepath.Join(c.dir, "cgroup.events"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "frozen 1" {
			return true
		}
	}
	return false
}

// freezerV1Mount is where the cgroup v1 freezer hierarchy is mounted
// ("" when it is not), from /proc/self/mountinfo (proc(5)): read once, a
// fact of the machine.
var freezerV1Mount = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		// … mount point … - fstype source super-options
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(g) >= 3 && g[0] == "cgroup" && slices.Contains(strings.Split(g[2], ","), "freezer") {
			return f[4]
		}
	}
	return ""
})

// frozenV1 reports whether pid's cgroup in the v1 freezer hierarchy is
// frozen: its freezer.state reads FROZEN or FREEZING
// (Documentation/admin-guide/cgroup-v1/freezer-subsystem.rst). Its tasks
// then sleep in state D, not T as under SIGSTOP, and answer nothing until
// THAWED. False without that hierarchy, or in its root (never frozen).
func frozenV1(pid int) bool {
	mnt := freezerV1Mount()
	if mnt == "" || pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// hierarchy-ID:controller-list:cgroup-path (cgroups(7))
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !slices.Contains(strings.Split(parts[1], ","), "freezer") {
			continue
		}
		if parts[2] == "/" {
			return false
		}
		st, err := os.ReadFile(filepath.Join(mnt, parts[2], "freezer.state"))
		s := strings.TrimSpace(string(st))
		return err == nil && (s == "FROZEN" || s == "FREEZING")
	}
	return false
}

// pidStopped reports whether pid, of the process tree t (nil for none
// known), is stopped (state T or t) or frozen: t's cgroup (v2), or its
// cgroup of the v1 freezer.
func pidStopped(pid int, t tree) bool {
	return processStopped(pid) || t != nil && t.frozen() || frozenV1(pid)
}

func (c cgroupTree) kill() error {
	return os.WriteFile(filepath.Join(c.dir, "cgroup.kill"), []byte("1"), 0)
}

func (c cgroupTree) finish() error {
	populated, err := cgroupPopulated(c.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if populated {
		if err := c.kill(); err != nil {
			return fmt.Errorf("%s: %w", c, err)
		}
	}
	// Once empty, the cgroup can go: rmdir fails with EBUSY until then.
	err = waitFor(treeWait, func() bool {
		err := unix.Rmdir(c.dir)
		return err == nil || errors.Is(err, unix.ENOENT)
	})
	if err != nil {
		return fmt.Errorf("%s: processes left %s after SIGKILL", c, treeWait)
	}
	return nil
}

// cgroupPopulated reports whether the cgroup dir or one below it holds a
// live process (cgroup.events: zombies do not count).
func cgroupPopulated(dir string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return false, err
	}
	return strings.Contains(string(b), "populated 1"), nil
}

// pgroupTree is a worker's process group, which it leads. Its number is
// safe to signal while the leader is alive or a zombie not yet reaped (a
// pid is not reused while a process of its group lives); after that only
// while a member is left, which finish checks first.
type pgroupTree struct{ pgid int }

func (p pgroupTree) String() string { return "process group " + strconv.Itoa(p.pgid) }

// frozen is false: only a cgroup freezes.
func (p pgroupTree) frozen() bool { return false }

func (p pgroupTree) kill() error {
	err := unix.Kill(-p.pgid, unix.SIGKILL)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

func (p pgroupTree) finish() error {
	if len(groupMembers(p.pgid)) == 0 {
		return nil
	}
	if err := p.kill(); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if err := waitFor(treeWait, func() bool { return len(groupMembers(p.pgid)) == 0 }); err != nil {
		return fmt.Errorf("%s: processes %v left %s after SIGKILL", p, groupMembers(p.pgid), treeWait)
	}
	return nil
}

// groupMembers returns the live processes (not zombies) of process group
// pgid.
func groupMembers(pgid int) []int {
	var out []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		pid, _, pgrp, state, ok := readStatGroup(path)
		if ok && pgrp == pgid && state != "Z" {
			out = append(out, pid)
		}
	}
	return out
}

// readStatGroup returns pid, parent pid, process group and state from
// /proc/PID/stat.
func readStatGroup(path string) (pid, ppid, pgrp int, state string, ok bool) {
	b, err := readProcFile(path)
	if err != nil {
		return 0, 0, 0, "", false
	}
	s := string(b)
	// The command name is in parentheses and may hold spaces.
	end := strings.LastIndexByte(s, ')')
	sp := strings.IndexByte(s, ' ')
	if end < 0 || sp < 0 {
		return 0, 0, 0, "", false
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 3 {
		return 0, 0, 0, "", false
	}
	pid, err1 := strconv.Atoi(s[:sp])
	ppid, err2 := strconv.Atoi(f[1])
	pgrp, err3 := strconv.Atoi(f[2])
	return pid, ppid, pgrp, f[0], err1 == nil && err2 == nil && err3 == nil
}

// readProcFile returns the content of a small file of /proc (a stat, a
// children list: less than a page, read whole by the kernel at the first
// read) with open(2), read(2) and close(2) only. os.ReadFile does seven
// system calls here: the os package tries each file it opens on its
// poller (fcntl O_NONBLOCK, epoll_ctl refused with EPERM for a /proc
// file, fcntl back) and fstats it for its size. The supervisor reads
// these at every SIGCHLD and at each worker's exit.
func readProcFile(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 512)
	for {
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
	}
}

// leaderTree returns pid's process group if pid leads it, else nil.
func leaderTree(pid int) tree {
	if _, _, pgrp, _, ok := readStatGroup("/proc/" + strconv.Itoa(pid) + "/stat"); ok && pgrp == pid {
		return pgroupTree{pgid: pid}
	}
	return nil
}

// waitExited blocks until the child pid has exited, without reaping it:
// its pid, and so its process group's number, stay its own meanwhile.
func waitExited(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, syscall.EINTR) {
			return
		}
	}
}

// waitFor polls done, more slowly as time passes, until it reports true
// or timeout has passed.
func waitFor(timeout time.Duration, done func() bool) error {
	deadline := time.Now().Add(timeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		if done() {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		time.Sleep(wait)
	}
}
