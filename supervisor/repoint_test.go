package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// repoint swaps --current's symlink through a temporary link of its own
// name, leaves anything an operator put at LINK since the start (a
// directory, a file) as it is, and leaves no temporary link behind. (A new
// user's trial: a directory made at LINK left a stray current.tmp and
// current not repointed, a file there was replaced, and a file named
// LINK.tmp was deleted at every upgrade.)
func TestRepointLeavesTheOperatorsFilesAlone(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"v1", "v2"} {
		if err := os.MkdirAll(filepath.Join(dir, "releases", v), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "current")
	rel := release{Version: "v2", Path: filepath.Join(dir, "releases", "v2", "app")}
	fx := &osEffects{current: link}
	notes := filepath.Join(dir, "current.tmp")
	if err := os.WriteFile(notes, []byte("operator notes"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("releases/v1", link); err != nil {
		t.Fatal(err)
	}
	if err := fx.repoint(rel); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.Readlink(link); got != "releases/v2" {
		t.Errorf("current -> %q; want releases/v2", got)
	}
	if b, err := os.ReadFile(notes); err != nil || string(b) != "operator notes" {
		t.Errorf("current.tmp = %q, %v; want the operator's file kept", b, err)
	}

	// An operator's absolute link stays absolute (it was made relative).
	os.Remove(link)
	if err := os.Symlink(filepath.Join(dir, "releases", "v1"), link); err != nil {
		t.Fatal(err)
	}
	if err := fx.repoint(rel); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.Readlink(link); got != filepath.Join(dir, "releases", "v2") {
		t.Errorf("absolute current -> %q; want %s", got, filepath.Join(dir, "releases", "v2"))
	}

	for _, what := range []string{"a directory", "a file"} {
		os.RemoveAll(link)
		if what == "a directory" {
			os.Mkdir(link, 0o755)
		} else {
			os.WriteFile(link, []byte("kept"), 0o644)
		}
		err := fx.repoint(rel)
		if err == nil || !strings.Contains(err.Error(), "is "+what+" now, not a symlink: left as it is") {
			t.Errorf("repoint over %s: %v; want it refused", what, err)
		}
		fi, err := os.Lstat(link)
		if err != nil || fi.Mode()&os.ModeSymlink != 0 {
			t.Errorf("%s at current: %v, %v; want it left as it is", what, fi, err)
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".current.launcher-*"))
	if len(left) > 0 {
		t.Errorf("temporary links left: %v", left)
	}
}

// A repoint that fails is said to `upgrade --wait`, which goes on: the
// upgrade served. (It was a log line only.)
func TestFailedRepointIsSaid(t *testing.T) {
	fx := newFakeEffects(t)
	fx.repointErr = errors.New("--current /srv/app/current is a directory now, not a symlink: left as it is")
	r := startRig(t, Config{Workers: 1, Probation: NoProbation}, fx, nil)
	r.waitStarted()
	var warned string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.s.UpgradeWith(ctx, "v2", UpgradeOptions{Wait: true}, func(p Progress) {
		if p.Step == StepWarning {
			warned = p.String()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(warned, "warning: not repointed to ") || !strings.Contains(warned, "is a directory now") {
		t.Errorf("warning step %q; want the failed repoint", warned)
	}
}

// A stop during a probation repoints --current back to the standby's
// release; a failure is said to the stop too. (A new user's trial: the
// stop printed only "stopped", and upgrade --wait claimed "--current
// points at it again" over the file left at LINK.)
func TestFailedRepointAtAStopIsSaid(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 1, Probation: 20 * time.Second}, fx, nil)
	r.waitStarted()
	if _, err := r.s.UpgradeWith(context.Background(), "v2", UpgradeOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	fx.mu.Lock()
	fx.repointErr = errors.New("--current /srv/app/current is a file now, not a symlink: left as it is")
	fx.mu.Unlock()
	var warned string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := (Client{StateDir: r.dir}).Stop(ctx, func(p Progress) {
		if p.Step == StepWarning {
			warned = p.String()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(warned, "warning: not repointed to ") || !strings.Contains(warned, "a restart of the supervisor would not run v1") {
		t.Errorf("stop's warning %q; want the failed repoint back to v1", warned)
	}
}

// An upgrade that does not happen leaves --current naming what serves.
// The article's habit is to repoint current and send SIGHUP: when that
// release was refused (not executable) or failed before it served (it
// exited at its start), current stayed on it, and the supervisor's next
// start ran it and failed, leaving nothing serving (a new user's trial, 7
// of 7).
func TestCurrentNamesWhatServesAfterAnUpgradeThatDidNotHappen(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v2"] = behaviour{exitBeforeReady: true}
	r, current := startRigOnCurrent(t, fx)
	r.waitStarted()
	nox := filepath.Join(r.rels, "nox", "app")
	if err := os.MkdirAll(filepath.Dir(nox), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(nox, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ to, why string }{
		{"v2", "exits before it is ready"},
		{"nox", "not executable: refused"},
	} {
		repointLink(t, current, filepath.Join(r.rels, c.to))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := r.s.Upgrade(ctx, "", false, nil) // as SIGHUP does
		cancel()
		if err == nil {
			t.Fatalf("upgrade to %s (%s): no error", c.to, c.why)
		}
		eventually(t, "current back on v1 after "+c.to, func() error {
			if got, _ := os.Readlink(current); filepath.Base(got) != "v1" {
				return fmt.Errorf("current -> %s, after an upgrade to %s that %s; want v1, which serves", got, c.to, c.why)
			}
			return nil
		})
	}
	if g := r.gen(1); g.State != StateActive {
		t.Errorf("generation 1 (v1) %s; want it serving on", g.State)
	}

	// Refused as in progress: current names what serves meanwhile, not
	// the refused release, nor the one starting (a recheck: it named the
	// refused one for the 10 s of the other's warm-up).
	fx.behave["v3"] = behaviour{readyAfter: 800 * time.Millisecond}
	started := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := r.s.Upgrade(ctx, "v3", false, nil)
		started <- err
	}()
	eventually(t, "v3 starting", func() error {
		if st := r.status(); len(st.Generations) == 0 || st.Generations[len(st.Generations)-1].Version != "v3" {
			return fmt.Errorf("generations %+v", st.Generations)
		}
		return nil
	})
	repointLink(t, current, filepath.Join(r.rels, "v2"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err := r.s.Upgrade(ctx, "", false, nil)
	cancel()
	if !errors.Is(err, ErrUpgradeInProgress) {
		t.Fatalf("upgrade while v3 starts: %v; want it refused in progress", err)
	}
	if got, _ := os.Readlink(current); filepath.Base(got) != "v1" {
		t.Errorf("current -> %s while v3 starts, after a refused upgrade to v2; want v1, which serves", got)
	}
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	eventually(t, "current at v3 once it serves", func() error {
		if got, _ := os.Readlink(current); filepath.Base(got) != "v3" {
			return fmt.Errorf("current -> %s", got)
		}
		return nil
	})
}

// A supervisor killed while an upgrade started, `current` repointed by
// the operator to that release before the SIGHUP: the adopter stops the
// starting generation and files its upgrade as failed, and points
// `current` at what serves. It left current on the release that never
// served, and the next clean start ran it and failed (a new user's
// recheck, 2 of 2).
func TestAdoptionPointsCurrentAtWhatServes(t *testing.T) {
	fx := newFakeEffects(t)
	fx.adoptable = map[int]string{501: "a", 601: "d"}
	var current string
	r := startRig(t, Config{Workers: 1, Listen: []string{"127.0.0.1:7"}}, fx, func(r *rig) {
		current = filepath.Join(filepath.Dir(r.rels), "current")
		if err := os.Symlink(filepath.Join(r.rels, "v3"), current); err != nil {
			t.Fatal(err)
		}
		fx.currentLink = current
		fx.saved = savedUpgradeStarting(r)
	})
	r.waitStarted()
	eventually(t, "current at v2, which serves", func() error {
		if got, _ := os.Readlink(current); filepath.Base(got) != "v2" {
			return fmt.Errorf("current -> %s after the adoption; want v2, the active generation's", got)
		}
		return nil
	})
	if g := r.gen(4); g.State != StateFailed {
		t.Errorf("generation 4 %s; want failed", g.State)
	}
}

// An upgrade refused while the first generation starts (a warm-up) leaves
// current on the first generation's release, what a restart runs again:
// it stayed on the refused release until the first generation served,
// and a supervisor killed in that window could not start again (a new
// user's recheck, 2 of 2).
func TestCurrentNamesTheFirstGenerationDuringItsStart(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{readyAfter: 2 * time.Second}
	r, current := startRigOnCurrent(t, fx)
	r.waitFirstStarting()
	nox := filepath.Join(r.rels, "nox", "app")
	if err := os.MkdirAll(filepath.Dir(nox), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(nox, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	repointLink(t, current, filepath.Join(r.rels, "nox"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.s.Upgrade(ctx, "", false, nil); !errors.Is(err, ErrBadRelease) {
		t.Fatalf("upgrade to a file that cannot run: %v; want it refused", err)
	}
	deadline := time.Now().Add(time.Second)
	for filepath.Base(mustReadlink(t, current)) != "v1" {
		if time.Now().After(deadline) {
			t.Fatalf("current -> %s during the first start; want v1, the release starting", mustReadlink(t, current))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := r.status(); len(st.Generations) == 0 || st.Generations[0].State != StateStarting {
		t.Errorf("generation 1 %+v; the check must run during its start", st.Generations)
	}
}

func mustReadlink(t *testing.T, p string) string {
	t.Helper()
	got, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// startRigOnCurrent starts a rig, 1 worker and no probation, whose
// command runs through a --current symlink beside its releases, pointing
// at v1 (the article's layout), and returns it with the link's path.
func startRigOnCurrent(t *testing.T, fx *fakeEffects) (*rig, string) {
	t.Helper()
	var current string
	r := startRig(t, Config{Workers: 1, Probation: NoProbation}, fx, func(r *rig) {
		current = filepath.Join(filepath.Dir(r.rels), "current")
		if err := os.Symlink(filepath.Join(r.rels, "v1"), current); err != nil {
			t.Fatal(err)
		}
		fx.currentLink = current
		r.s.cfg.Current = current
		r.s.cfg.Command[0] = filepath.Join(current, "app")
		first, err := r.s.resolve("")
		if err != nil {
			t.Fatal(err)
		}
		r.s.first = first
	})
	return r, current
}

// repointLink points the symlink link at target, atomically, as an
// operator's ln -sfn and mv -T do.
func repointLink(t *testing.T, link, target string) {
	t.Helper()
	tmp := link + ".op"
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
}

// waitFirstStarting waits until the first generation shows starting.
func (r *rig) waitFirstStarting() {
	r.t.Helper()
	eventually(r.t, "generation 1 starting", func() error {
		st, err := r.s.Status(context.Background())
		if err != nil || len(st.Generations) == 0 || st.Generations[0].State != StateStarting {
			return fmt.Errorf("status %+v, %v", st, err)
		}
		return nil
	})
}

// savedUpgradeStarting is the state file a supervisor killed during an
// upgrade leaves: generation 3 (v2) active in pid 501 (token "a"),
// generation 4 (v3) starting in pid 601 ("d").
func savedUpgradeStarting(r *rig) *savedState {
	return &savedState{Supervisor: 9, Listen: []string{"127.0.0.1:7"}, Active: 3, LastGen: 4,
		Gens: []savedGen{
			{Num: 3, Release: savedRelease{Version: "v2", Path: r.path("v2")}, State: StateActive,
				Workers: []savedWorker{{Index: 0, PID: 501, Token: "a", Ready: true}}},
			{Num: 4, Release: savedRelease{Version: "v3", Path: r.path("v3")}, State: StateStarting,
				Workers: []savedWorker{{Index: 0, PID: 601, Token: "d"}}},
		},
		Group:   []string{"a"},
		History: []savedRelease{{Version: "v2", Path: r.path("v2")}},
	}
}
