package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
)

// TestSwapFile: each write replaces the content whole and the swap file
// keeps the one before, the two names exchanged: the state file and its
// swap file keep their two inodes from one write to the next, and their
// room on disk (stateReserve), what follows the content blanked.
func TestSwapFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), stateName)
	f := newStateFile(path)
	inodes := map[uint64]bool{}
	// Each write shorter than the one before: nothing of it may remain.
	for i, content := range []string{`{"n":1, "pad": "xxxxxxxx"}`, `{"n":2, "pad": "xxxx"}`, `{"n":3}`, `{"n":4}`} {
		if err := f.write([]byte(content)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != stateReserve || !strings.HasPrefix(string(b), content+"\n") || strings.Trim(string(b[len(content)+1:]), " ") != "" {
			t.Fatalf("write %d: read %q… (%d bytes); want %q and spaces up to %d bytes", i, b[:min(len(b), 80)], len(b), content+"\n", stateReserve)
		}
		var v struct{ N int }
		if err := json.Unmarshal(b, &v); err != nil || v.N != i+1 {
			t.Errorf("write %d: decoded %+v, %v", i, v, err)
		}
		if i > 0 {
			prev, err := os.ReadFile(path + swapSuffix)
			if err != nil || !strings.HasPrefix(string(prev), fmt.Sprintf(`{"n":%d`, i)) {
				t.Errorf("write %d: swap file %q, %v; want the write before", i, prev, err)
			}
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v; want 0600", fi.Mode().Perm())
		}
		inodes[fi.Sys().(*syscall.Stat_t).Ino] = true
	}
	if len(inodes) > 2 {
		t.Errorf("the state file had %d inodes over 4 writes; want 2 (exchanged, not made anew)", len(inodes))
	}
	// A supervisor started anew does not know what its predecessor wrote:
	// it blanks all of it.
	long := `{"n":5, "pad": "` + strings.Repeat("x", stateReserve) + `"}`
	if err := newStateFile(path).write([]byte(long)); err != nil {
		t.Fatal(err)
	}
	f = newStateFile(path)
	for _, content := range []string{`{"n":6}`, `{"n":7}`} {
		if err := f.write([]byte(content)); err != nil {
			t.Fatal(err)
		}
		var v struct{ N int }
		if b, err := os.ReadFile(path); err != nil || json.Unmarshal(b, &v) != nil || !strings.HasPrefix(string(b), content) {
			t.Errorf("after a longer write by another: read %q…, %v", b[:min(len(b), 80)], err)
		}
	}
}

// TestStateFileWritesOnAFullFilesystem: once the state dir's filesystem
// has filled up, the state file still takes every write within its
// reserve. Before, each write that outgrew the file's last block failed
// (ENOSPC), and upgrades went on unrecorded (a new user's trial: a
// supervisor killed then left workers no other could adopt). A tmpfs of
// its own, in a mount namespace of this test's thread alone.
func TestStateFileWritesOnAFullFilesystem(t *testing.T) {
	onSmallTmpfs(t, "192k", func(dir string) error {
		f := newStateFile(filepath.Join(dir, stateName))
		state := func(n int) []byte { return fmt.Appendf(nil, `{"n":%d, "pad": %q}`, n, strings.Repeat("x", n*1024)) }
		for n := range 2 {
			if err := f.write(state(n)); err != nil {
				return fmt.Errorf("write before the filesystem filled: %w", err)
			}
		}
		if err := fill(dir); err != nil {
			return err
		}
		for n := 2; n < 40; n += 3 {
			if err := f.write(state(n)); err != nil {
				return fmt.Errorf("write of %d KiB on the full filesystem: %w", n, err)
			}
		}
		return nil
	})
}

// On a filesystem with no room for both files' reserve the state file is
// written without it: every write failed (a new user's recheck, a 128k
// tmpfs).
func TestStateFileWithoutRoomForItsReserve(t *testing.T) {
	onSmallTmpfs(t, "96k", func(dir string) error {
		f := newStateFile(filepath.Join(dir, stateName))
		for n := range 6 {
			content := fmt.Appendf(nil, `{"n":%d, "pad": %q}`, n, strings.Repeat("x", (5-n)*1024))
			if err := f.write(content); err != nil {
				return fmt.Errorf("write %d: %w", n, err)
			}
			var v struct{ N int }
			if b, err := os.ReadFile(filepath.Join(dir, stateName)); err != nil || json.Unmarshal(b, &v) != nil || v.N != n {
				return fmt.Errorf("write %d: read %q…, %v", n, b[:min(len(b), 40)], err)
			}
		}
		return nil
	})
}

// A start refused for a full filesystem leaves nothing behind: it left
// the directory it made and an empty launcher.pid.tmp (a new user's
// trial).
func TestRefusedStartOnAFullFilesystemLeavesNothing(t *testing.T) {
	onSmallTmpfs(t, "64k", func(dir string) error {
		if err := fill(dir); err != nil {
			return err
		}
		// An existing directory keeps its mode.
		if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
			return err
		}
		if d, err := openStateDir(dir); err == nil {
			d.close()
			return errors.New("state dir opened on a full filesystem")
		}
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o777 || fi.Mode()&os.ModeSticky == 0 {
			return fmt.Errorf("the existing state dir's mode is %v after a refused start (%v); want its drwxrwxrwt", fi.Mode(), err)
		}
		st := filepath.Join(dir, "st")
		if d, err := openStateDir(st); err == nil {
			d.close()
			return errors.New("state dir opened on a full filesystem")
		} else if !errors.Is(err, unix.ENOSPC) {
			return fmt.Errorf("open state dir: %v; want ENOSPC", err)
		}
		if left, _ := filepath.Glob(filepath.Join(st, "*")); len(left) > 0 {
			return fmt.Errorf("left %v", left)
		}
		if _, err := os.Stat(st); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("the state dir it made is still there (%v)", err)
		}
		return nil
	})
}

// The first start after a supervisor's kill on a full filesystem takes
// the state dir: its pid file goes over the one the killed supervisor
// left. It failed there (ENOSPC), and could not adopt the workers (a new
// user's recheck).
func TestStartAfterAKillOnAFullFilesystem(t *testing.T) {
	onSmallTmpfs(t, "64k", func(dir string) error {
		st := filepath.Join(dir, "st")
		d, err := openStateDir(st)
		if err != nil {
			return err
		}
		// Killed: its pid file, lock and state file stay.
		if err := os.WriteFile(statePath(st), []byte(`{"supervisor_pid": 1}`), 0o600); err != nil {
			return err
		}
		d.lock.Close()
		if err := fill(dir); err != nil {
			return err
		}
		d2, err := openStateDir(st)
		if err != nil {
			return fmt.Errorf("start after the kill: %w", err)
		}
		defer d2.close()
		if pid := readPID(PIDFile(st)); pid != os.Getpid() {
			return fmt.Errorf("pid file holds %d; want %d", pid, os.Getpid())
		}
		return nil
	})
}

// onSmallTmpfs runs f with the path of a tmpfs of size (mount's size=)
// mounted in a mount namespace of a thread of its own, which nothing else
// sees and which goes with the thread. It needs root.
func onSmallTmpfs(t *testing.T, size string, f func(dir string) error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a mount namespace and a tmpfs")
	}
	dir := t.TempDir()
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread leaves with the goroutine.
		runtime.LockOSThread()
		done <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_FS); err != nil {
				return fmt.Errorf("unshare: %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("make mounts private: %w", err)
			}
			if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
				return fmt.Errorf("mount tmpfs: %w", err)
			}
			defer unix.Unmount(dir, unix.MNT_DETACH)
			return f(dir)
		}()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// fill fills dir's filesystem with a file of its own.
func fill(dir string) error {
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		return err
	}
	defer filler.Close()
	if _, err := filler.Write(make([]byte, 1<<20)); !errors.Is(err, unix.ENOSPC) {
		return fmt.Errorf("filler: %v; want ENOSPC", err)
	}
	return nil
}

// BenchmarkStateWrite: a state file's write by exchange (swapFile)
// against one through a new file renamed over it (writeFileAtomic).
func BenchmarkStateWrite(b *testing.B) {
	content := []byte(`{"supervisor_pid": 1, "generations": []}`)
	b.Run("exchange", func(b *testing.B) {
		f := newStateFile(filepath.Join(b.TempDir(), stateName))
		for b.Loop() {
			if err := f.write(content); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rename", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), stateName)
		for b.Loop() {
			if err := writeFileAtomic(path, string(content)+"\n"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestSavedReportsJSON: the state file (marshalState) reads as the state
// it was, and its reports as the UpgradeReports they were, whether their JSON was kept (a final report)
// or made at this write (one still changing), and a report's kept JSON
// is dropped with the report.
func TestSavedReportsJSON(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	final := &UpgradeReport{Generation: 2, Version: "v2", From: 1, FromVersion: "v1", Command: at, ReadyAfter: 5 * time.Millisecond,
		VerdictAfter: 9 * time.Millisecond, GoneAfter: 20 * time.Millisecond, Verdict: VerdictPassed, New: &WindowFigures{Requests: 7}}
	open := &UpgradeReport{Generation: 3, Version: "v3", From: 2, FromVersion: "v2", Command: at, Verdict: VerdictPassed}
	l := &loop{reports: []*UpgradeReport{final, open}}
	check := func(when string) {
		t.Helper()
		st := savedState{Supervisor: 7, Saved: at, Listen: []string{"127.0.0.1:1"}, Active: 3, Canary: 10, Reports: l.savedReports()}
		b, err := marshalState(st)
		if err != nil {
			t.Fatal(err)
		}
		var got savedState
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v in\n%s", when, err, b)
		}
		plain, _ := json.Marshal(st)
		var wantSt savedState
		json.Unmarshal(plain, &wantSt)
		g, _ := json.Marshal(got)
		if w, _ := json.Marshal(wantSt); string(g) != string(w) {
			t.Errorf("%s: state read back\n%s\nwant\n%s", when, g, w)
		}
		want, _ := json.Marshal(l.upgradeHistory())
		have := make([]UpgradeReport, 0, len(got.Reports))
		for _, r := range got.Reports {
			have = append(have, r.UpgradeReport)
		}
		if h, _ := json.Marshal(have); string(h) != string(want) {
			t.Errorf("%s: reports read back\n%s\nwant\n%s", when, h, want)
		}
	}
	check("first write")
	if _, ok := l.reportJSON[final]; !ok || len(l.reportJSON) != 1 {
		t.Errorf("kept JSON of %d reports, final one %v; want the final one only", len(l.reportJSON), ok)
	}
	open.GoneAfter = 30 * time.Millisecond // now final too
	check("after the second report's generation went")
	l.reports = l.reports[1:]
	check("after the first report left the history")
	if _, ok := l.reportJSON[final]; ok || len(l.reportJSON) != 1 {
		t.Errorf("kept JSON of %d reports, of the dropped one %v; want the remaining one only", len(l.reportJSON), ok)
	}
}

// A state file whose write failed is written again every stateRetryEvery
// until one takes, and launcher_state_file_stale says so meanwhile; the
// upgrade whose switch it could not record says so in a warning step. It
// stayed stale until the next change (a new user's recheck: until the
// next upgrade), and an alert on the errors' increase cleared while it
// was.
func TestStaleStateFileWrittenAgain(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, Probation: NoProbation}, fx, func(r *rig) {
		r.s.loop.stateRetryEvery = 100 * time.Millisecond
	})
	r.waitStarted()
	fx.mu.Lock()
	fx.saveErr = errors.New("write state.json.swap: no space left on device")
	fx.mu.Unlock()
	st, err := r.upgrade("v2", true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.text(), "warning: state file not written (write state.json.swap: no space left on device): should the supervisor be killed, a new one could not adopt generation 2") {
		t.Errorf("steps:\n%s\nwant the warning", st.text())
	}
	if v := testutil.ToFloat64(r.s.metrics.StateFileStale); v != 1 {
		t.Errorf("launcher_state_file_stale = %v; want 1", v)
	}
	fx.mu.Lock()
	fx.saveErr = nil
	fx.mu.Unlock()
	eventually(t, "the state file written again", func() error {
		fx.mu.Lock()
		defer fx.mu.Unlock()
		if fx.state == nil || fx.state.Active != 2 {
			return fmt.Errorf("state file %+v", fx.state)
		}
		return nil
	})
	eventually(t, "not stale", func() error {
		if v := testutil.ToFloat64(r.s.metrics.StateFileStale); v != 0 {
			return fmt.Errorf("launcher_state_file_stale = %v", v)
		}
		return nil
	})
}
