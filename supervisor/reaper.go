package supervisor

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// reapEvery is how often, besides on SIGCHLD, the reaper looks for
// orphaned zombies.
const reapEvery = 5 * time.Second

// reapCoalesce is how long the reaper lets SIGCHLDs gather before it
// looks: an orphan stays a zombie that much longer, harmlessly.
const reapCoalesce = 20 * time.Millisecond

// reaper does the duty of PID 1 in a container, and of a child subreaper
// elsewhere: orphaned processes (a worker's children whose parent died)
// are re-parented to us, and they stay zombies until we wait for them. It
// reaps only zombies that are not the supervisor's own workers, whose exit
// statuses belong to their exec.Cmd: the loop, which starts every worker
// and registers its pid in the same step, says which those are.
type reaper struct {
	log *slog.Logger
	// notWorkers returns the pids among its argument that are no worker of
	// the supervisor's.
	notWorkers func([]int) []int
}

// becomeSubreaper makes orphaned descendants (a worker's children whose
// parent died) re-parent to this process rather than to init, so they are
// reaped here whether or not this is PID 1.
func becomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// run reaps until ctx ends.
func (r reaper) run(ctx context.Context) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	t := time.NewTicker(reapEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
			// A generation's workers exit in a burst: one walk for the
			// burst, not one per exit.
			select {
			case <-ctx.Done():
				return
			case <-time.After(reapCoalesce):
			}
			select {
			case <-sig:
			default:
			}
		case <-t.C:
		}
		r.reapOrphans()
	}
}

// reapOrphans waits for every zombie child that is not a worker.
func (r reaper) reapOrphans() {
	me := os.Getpid()
	var zombies []int
	for _, path := range childStats() {
		if pid, ppid, state, ok := readStat(path); ok && ppid == me && state == "Z" {
			zombies = append(zombies, pid)
		}
	}
	if len(zombies) == 0 {
		return
	}
	for _, pid := range r.notWorkers(zombies) {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); err == nil {
			r.log.Debug("reaped orphan", "pid", pid)
		}
	}
}

// childStats returns the /proc/PID/stat paths of this process's children,
// read from each thread's /proc/self/task/TID/children (proc(5), Linux
// 3.5 with CONFIG_PROC_CHILDREN): a walk of our children only, where a
// walk of /proc reads every process on the host, at every SIGCHLD (each
// worker's exit). Without those files it falls back to every process's.
// proc(5) warns that the lists may miss a child created or re-parented
// during the read; such a zombie is reaped at the next SIGCHLD or tick.
func childStats() []string {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return allStats()
	}
	var out []string
	for _, t := range tasks {
		b, err := readProcFile("/proc/self/task/" + t.Name() + "/children")
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return allStats()
			}
			continue // the thread exited meanwhile
		}
		for _, pid := range strings.Fields(string(b)) {
			out = append(out, "/proc/"+pid+"/stat")
		}
	}
	return out
}

// allStats returns the /proc/PID/stat paths of every process.
func allStats() []string {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	return stats
}

// readStat returns pid, parent pid and state from /proc/PID/stat.
func readStat(path string) (pid, ppid int, state string, ok bool) {
	pid, ppid, _, state, ok = readStatGroup(path)
	return pid, ppid, state, ok
}
