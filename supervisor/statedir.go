package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// File names inside the state directory.
const (
	lockName    = "launcher.lock"
	pidName     = "launcher.pid"
	controlName = "control.sock"
	adminDir    = "admin"
)

// ErrRunning is returned when another live supervisor holds the state
// directory.
var ErrRunning = errors.New("a supervisor is already running")

// stateDir is a locked state directory. The lock is an flock held for the
// supervisor's life: the kernel drops it when the process dies, so a stale
// pid file or socket left by a killed supervisor never blocks a new start.
type stateDir struct {
	path string
	lock *os.File
	// created: the directory did not exist before this supervisor, or
	// before the one whose state file it adopted (savedState.CreatedDir);
	// if it leaves it with nothing but its lock (a clean stop, a refused
	// start), close removes it, so that a refused command changes nothing
	// and a stop leaves what was there before the first start, adopted or
	// not. Set again by an adoption, read at close.
	created atomic.Bool
}

// ControlSocket returns the path of the control socket in dir.
func ControlSocket(dir string) string { return filepath.Join(dir, controlName) }

// PIDFile returns the path of the supervisor's pid file in dir.
func PIDFile(dir string) string { return filepath.Join(dir, pidName) }

func openStateDir(path string) (*stateDir, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("state dir %s: %w", path, err)
	}
	_, statErr := os.Stat(abs)
	created := errors.Is(statErr, os.ErrNotExist)
	if err := os.MkdirAll(filepath.Join(abs, adminDir), 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	// Owner-only, when it is ours to change (a Kubernetes emptyDir or a
	// RuntimeDirectory may belong to someone else and is set up already).
	// A refused start puts the mode back: it changes nothing (a new
	// user's recheck: a start refused for a full filesystem left a
	// directory it had not made owner-only).
	restoreMode := func() {}
	if st, err := os.Stat(abs); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) == os.Getuid() {
			if err := os.Chmod(abs, 0o700); err != nil {
				return nil, fmt.Errorf("state dir: %w", err)
			}
			if mode := st.Mode(); !created && mode.Perm() != 0o700 {
				restoreMode = func() { os.Chmod(abs, mode.Perm()|mode&(os.ModeSticky|os.ModeSetgid|os.ModeSetuid)) }
			}
		}
	}
	f, err := os.OpenFile(filepath.Join(abs, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		restoreMode()
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid := lockHolder(f)
		if pid == 0 {
			pid = readPID(PIDFile(abs))
		}
		f.Close()
		restoreMode()
		return nil, fmt.Errorf("%w on %s (pid %d)", ErrRunning, abs, pid)
	}
	// We hold the lock: the socket is stale. Admin sockets may belong to
	// workers a killed supervisor left serving (see adopt).
	os.Remove(ControlSocket(abs))
	d := &stateDir{path: abs, lock: f}
	d.created.Store(created)
	if err := writePIDFile(PIDFile(abs), os.Getpid()); err != nil {
		d.close()
		restoreMode()
		return nil, fmt.Errorf("state dir: %w", err)
	}
	return d, nil
}

func (d *stateDir) adminSocket(gen, worker int) string {
	return filepath.Join(d.path, adminDir, fmt.Sprintf("g%d-w%d.sock", gen, worker))
}

func (d *stateDir) close() {
	os.Remove(PIDFile(d.path))
	os.Remove(ControlSocket(d.path))
	os.Remove(filepath.Join(d.path, adminDir)) // only if empty: workers left serving keep theirs
	// With no state file left (a clean stop removes it; a refused start
	// wrote none) nothing here is for a later start to adopt: the lock
	// goes too, and a directory this supervisor made if it is empty then.
	// A directory that was there before keeps what else it holds (a
	// systemd RuntimeDirectory). The lock is unlinked while held: no
	// other start can be waiting on it, as it would hold the lock (or
	// have failed to take it).
	if _, err := os.Stat(statePath(d.path)); errors.Is(err, os.ErrNotExist) {
		os.Remove(filepath.Join(d.path, lockName))
		if d.created.Load() {
			os.Remove(d.path) // only if empty
		}
	}
	d.lock.Close()
}

// lockHolder returns the pid of the process holding the flock on f, from
// /proc/locks (its lines "N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0
// EOF", device numbers in hex: see proc(5)); 0 if none is listed. The pid
// file is no substitute: the holder writes it after it takes the lock, and
// until then it names the supervisor before (a killed one, when two starts
// race to adopt its workers).
func lockHolder(f *os.File) int {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0
	}
	key := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		// "->" marks a waiter (a blocked request), not a holder.
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != key {
			continue
		}
		if pid, err := strconv.Atoi(fields[4]); err == nil {
			return pid
		}
	}
	return 0
}

func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// writePIDFile writes pid to path, by a new file renamed over it, or, on a
// filesystem too full for a new file, in place over the one a killed
// supervisor left (whose block the truncation frees for the write): the
// first start after a kill on a full filesystem failed there, and could
// not adopt the workers (a new user's recheck).
func writePIDFile(path string, pid int) error {
	content := strconv.Itoa(pid) + "\n"
	err := writeFileAtomic(path, content)
	if errors.Is(err, syscall.ENOSPC) {
		if _, serr := os.Stat(path); serr == nil {
			return os.WriteFile(path, []byte(content), 0o600)
		}
	}
	return err
}

func writeFileAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		os.Remove(tmp) // created, maybe, and written in part (a full filesystem)
		return err
	}
	return os.Rename(tmp, path)
}
