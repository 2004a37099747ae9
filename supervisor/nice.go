package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// Staging a new generation's cold start (Config.StartNice): its workers
// start at a lower CPU priority, so that the runtime start and the
// handshake of the new processes take less from the old generation, which
// is serving meanwhile on the same CPUs, and get the normal priority back
// once they are ready. The nice value is a thread's (sched(7): on Linux
// setpriority(PRIO_PROCESS, tid) sets one thread), and a new thread
// inherits its creator's: a worker is forked from a thread of the
// supervisor set to the lower priority for that moment, and raised by
// setting each of its threads (/proc/PID/task) back. Lowering a nice value
// again needs CAP_SYS_NICE (or RLIMIT_NICE), checked once at start.

// niceOf returns thread tid's nice value (0 is this thread).
// getpriority(2)'s raw syscall returns 20 - nice.
func niceOf(tid int) (int, error) {
	p, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return 0, err
	}
	return 20 - p, nil
}

// probeNice reports whether this process may start workers at nice n
// and raise them back to its own nice value, which it returns: it raises
// and lowers a thread of its own, which it then lets end, so that no
// thread of the supervisor is left at the lower priority.
func probeNice(n int) (base int, err error) {
	done := make(chan error, 1)
	go func() { // ends at once; its thread ends with it (still locked)
		runtime.LockOSThread()
		b, err := niceOf(0)
		if err == nil {
			base = b
			if err = unix.Setpriority(unix.PRIO_PROCESS, 0, base+n); err == nil {
				err = unix.Setpriority(unix.PRIO_PROCESS, 0, base)
			}
		}
		done <- err
	}()
	if err := <-done; err != nil {
		return 0, fmt.Errorf("cannot lower a nice value again (needs CAP_SYS_NICE): %w", err)
	}
	return base, nil
}

// startNiced runs start, which forks a process, on a thread set to nice
// n meanwhile, so that the process starts at n. It sets the thread back
// to base; should that fail, the thread is left locked and ends with its
// goroutine rather than serve the supervisor at n.
func startNiced(n, base int, start func() error) error {
	errc := make(chan error, 1)
	go func() { // ends when start returns
		runtime.LockOSThread()
		if err := unix.Setpriority(unix.PRIO_PROCESS, 0, n); err != nil {
			runtime.UnlockOSThread()
			errc <- start()
			return
		}
		err := start()
		if unix.Setpriority(unix.PRIO_PROCESS, 0, base) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// renice sets every thread of process pid to nice n.
func renice(pid, n int) error {
	tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, n); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("thread %d: %w", tid, err))
		}
	}
	return errors.Join(errs...)
}
