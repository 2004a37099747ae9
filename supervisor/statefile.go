package supervisor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// stateName is the state file in the state directory: what a supervisor
// started after this one was killed needs to adopt the running workers.
const stateName = "state.json"

// savedState is the state file's content.
type savedState struct {
	Supervisor int       `json:"supervisor_pid"`
	Saved      time.Time `json:"saved"`
	Listen     []string  `json:"listen"`
	// Workers is --workers: an adopting supervisor with a larger one
	// starts the rest as new workers, not as restarts of dead ones.
	Workers int            `json:"workers,omitempty"`
	Active  int            `json:"active_generation"`
	LastGen int            `json:"last_generation"`
	Gens    []savedGen     `json:"generations"`
	Group   []string       `json:"reuseport_group"` // worker tokens, by slot in the kernel's group
	History []savedRelease `json:"history"`
	// Reports are the last upgrades' reports (status's history, at most
	// keepReports of about 1 KB each), kept across an adoption.
	Reports []savedReport `json:"reports,omitempty"`
	// Canary is the new generation's weight (percent of new connections)
	// during a canary step, else 0: for the log of an adoption.
	Canary int `json:"canary_weight,omitempty"`
	// CreatedDir: the first supervisor of this state directory made it, so
	// that a supervisor adopting from this file removes it at a clean stop
	// as that one would have (not an operator's own directory).
	CreatedDir bool `json:"created_dir,omitempty"`
}

// marshalState returns st as the state file holds it: compact JSON (the
// file is written several times an upgrade, and indenting it was a third
// of its encoding; jq . shows it indented), with the reports' kept JSON
// (savedReport.raw) spliced in as it is. Through MarshalJSON,
// encoding/json would scan and compact each again.
func marshalState(st savedState) ([]byte, error) {
	reports := st.Reports
	st.Reports = nil // omitted: the object then ends at its last byte
	b, err := json.Marshal(st)
	if err != nil || len(reports) == 0 {
		return b, err
	}
	b = append(b[:len(b)-1], `,"reports":[`...)
	for i, r := range reports {
		if i > 0 {
			b = append(b, ',')
		}
		raw := r.raw
		if raw == nil {
			if raw, err = json.Marshal(r.UpgradeReport); err != nil {
				return nil, err
			}
		}
		b = append(b, raw...)
	}
	return append(b, "]}"...), nil
}

// savedReport is an upgrade report in the state file, in the same JSON
// as UpgradeReport (its fields are promoted). raw, when set, is that JSON
// already made: a final report does not change, and encoding the kept
// reports anew at every write of the file was most of its cost.
type savedReport struct {
	UpgradeReport
	raw []byte
}

// MarshalJSON returns raw if set, else encodes the report.
func (r savedReport) MarshalJSON() ([]byte, error) {
	if r.raw != nil {
		return r.raw, nil
	}
	return json.Marshal(r.UpgradeReport)
}

type savedRelease struct {
	Version string `json:"version"`
	Path    string `json:"path"`
}

type savedGen struct {
	Num     int          `json:"generation"`
	Release savedRelease `json:"release"`
	State   string       `json:"state"`
	Started time.Time    `json:"started"`
	// Restarts counts the generation's worker restarts, so that status
	// goes on counting them after an adoption.
	Restarts int           `json:"restarts,omitempty"`
	Workers  []savedWorker `json:"workers"`
}

type savedWorker struct {
	Index int    `json:"index"`
	PID   int    `json:"pid"`
	Token string `json:"token"`
	Admin string `json:"admin"`
	Ready bool   `json:"ready"`
}

func statePath(dir string) string { return filepath.Join(dir, stateName) }

// swapSuffix names the file beside the state file that the next write
// goes to (it holds the write before last).
const swapSuffix = ".swap"

// stateReserve is the room on disk each of the state file's two files
// keeps (bytes): written in place within it, a state file needs no new
// block, so a filesystem that fills up after the start (logs beside it)
// still takes every write. The supervisor's state with the 20 reports it
// keeps and 32 workers is about 30 KiB. Without it a full state dir made
// every write fail once the file outgrew its last block: upgrades went
// on, each unrecorded, and a supervisor killed then left workers that no
// other could adopt (a new user's trial).
const stateReserve = 64 << 10

// stateFile writes the state file: see write.
type stateFile struct {
	path string
	// ends are where the content of the state file ([0]) and of its swap
	// file ([1]) end, as last written here; -1 while unknown (not yet
	// written by this process): what may follow up to a file's size is
	// then blanked whole.
	ends [2]int64
}

// pwriteAll writes b at the start of fd.
func pwriteAll(fd int, b []byte) error {
	for off := 0; off < len(b); {
		n, err := unix.Pwrite(fd, b[off:], int64(off))
		switch {
		case err == unix.EINTR:
		case err != nil:
			return err
		case n == 0:
			return io.ErrShortWrite
		}
		off += max(n, 0)
	}
	return nil
}

func newStateFile(path string) *stateFile { return &stateFile{path: path, ends: [2]int64{-1, -1}} }

// write replaces the state file's content with content and a newline,
// so that a reader sees the whole old or the whole new content, never a
// mix: it writes path+swapSuffix and exchanges the two names in one
// renameat2(RENAME_EXCHANGE) (Linux 3.15; ext4, xfs, btrfs, tmpfs). Both
// files keep their inodes from one write to the next. A write through a
// new file renamed over the old one, as writeFileAtomic does, made a
// filesystem allocate an inode and free one each time, which on ext4 was
// the largest part of the supervisor's CPU per upgrade (a state file is
// written several times an upgrade). Where the exchange is refused (the
// first write; another filesystem), it renames. About 20 µs a write on
// ext4 against 180–810 µs (BenchmarkStateWrite).
//
// Each file is overwritten in place and never cut: what is left of the
// longer content before is blanked with spaces, which JSON reads as
// whitespace, and a file shorter than stateReserve is filled up to it
// (see stateReserve). A copy-on-write filesystem (btrfs) allocates anew
// at every write, reserve or not.
func (f *stateFile) write(content []byte) error {
	next := f.path + swapSuffix
	// With system calls of its own: os.OpenFile tries the file on the
	// poller (fcntl, epoll_ctl refused, fcntl), five calls more a write.
	fd, err := unix.Open(next, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "open", Path: next, Err: err}
	}
	content = append(content, '\n')
	end := int64(len(content))
	blankTo := max(end, f.ends[1])
	var st unix.Stat_t
	if err = unix.Fstat(fd, &st); err == nil {
		if f.ends[1] < 0 {
			blankTo = max(blankTo, st.Size)
		}
		if st.Size < stateReserve {
			blankTo = max(blankTo, stateReserve)
		}
	}
	if blankTo > end {
		content = append(content, bytes.Repeat([]byte{' '}, int(blankTo-end))...)
	}
	if err == nil {
		err = pwriteAll(fd, content)
		if errors.Is(err, unix.ENOSPC) && len(content) > int(end) {
			// No room for the reserve (a filesystem too small for it,
			// or full): the content alone, cut to its length, which
			// frees what the old one held beyond it.
			err = unix.Ftruncate(fd, end)
			if err == nil {
				err = pwriteAll(fd, content[:end])
			}
		}
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		f.ends[1] = -1 // written in part
		return &os.PathError{Op: "write", Path: next, Err: err}
	}
	if unix.Renameat2(unix.AT_FDCWD, next, unix.AT_FDCWD, f.path, unix.RENAME_EXCHANGE) == nil {
		f.ends = [2]int64{end, f.ends[0]}
		return nil
	}
	if err := os.Rename(next, f.path); err != nil {
		return err
	}
	f.ends = [2]int64{end, -1}
	return nil
}

// snapshot returns what the state file holds: the generations with live
// processes, the group's order and the release history.
func (l *loop) snapshot() savedState {
	st := savedState{Supervisor: os.Getpid(), Saved: time.Now(), Listen: l.cfg.Listen, Workers: l.cfg.Workers, LastGen: l.lastGen}
	if l.active != nil {
		st.Active = l.active.num
	}
	for _, g := range l.gens {
		sg := savedGen{Num: g.num, Release: savedRelease(g.release), State: g.state, Started: g.started, Restarts: g.restarts.restarts}
		for _, w := range g.live() {
			sg.Workers = append(sg.Workers, savedWorker{Index: w.index, PID: w.pid, Token: w.token, Admin: w.admin, Ready: w.ready})
		}
		if len(sg.Workers) > 0 {
			st.Gens = append(st.Gens, sg)
		}
	}
	for _, w := range l.group.Members() {
		st.Group = append(st.Group, w.token)
	}
	for _, r := range l.history {
		st.History = append(st.History, savedRelease(r))
	}
	st.Reports = l.savedReports()
	if w := l.active.canaryWeight(); w < 100 {
		st.Canary = w
	}
	return st
}

// loadState reads the state file of dir; (nil, nil) if there is none.
func loadState(dir string) (*savedState, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	var st savedState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", statePath(dir), err)
	}
	return &st, nil
}
