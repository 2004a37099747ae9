package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// stateName is the state file in the state directory: what a supervisor
// started after this one was killed needs to adopt the running workers.
const stateName = "state.json"

// savedState is the state file's content.
type savedState struct {
	Supervisor int            `json:"supervisor_pid"`
	Saved      time.Time      `json:"saved"`
	Listen     []string       `json:"listen"`
	Active     int            `json:"active_generation"`
	LastGen    int            `json:"last_generation"`
	Gens       []savedGen     `json:"generations"`
	Group      []string       `json:"reuseport_group"` // worker tokens, by slot in the kernel's group
	History    []savedRelease `json:"history"`
}

type savedRelease struct {
	Version string `json:"version"`
	Path    string `json:"path"`
}

type savedGen struct {
	Num     int           `json:"generation"`
	Release savedRelease  `json:"release"`
	State   string        `json:"state"`
	Started time.Time     `json:"started"`
	Workers []savedWorker `json:"workers"`
}

type savedWorker struct {
	Index int    `json:"index"`
	PID   int    `json:"pid"`
	Token string `json:"token"`
	Admin string `json:"admin"`
	Ready bool   `json:"ready"`
}

func statePath(dir string) string { return filepath.Join(dir, stateName) }

// markDirty asks the state saver to write the state file. It never blocks,
// so it may be called with any lock held.
func (s *Supervisor) markDirty() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// saveState writes the state file whenever it is marked dirty, until ctx
// ends. It is owned by Run.
func (s *Supervisor) saveState(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.dirty:
		}
		s.flushState()
	}
}

// flushState writes the state file now. Transitions a restarted
// supervisor must not miss (which generation is active) call it before
// they are reported, rather than wait for the saver. Snapshot and write
// happen under one lock, so an older snapshot never overwrites a newer
// one. The caller holds neither listenMu nor mu.
func (s *Supervisor) flushState() {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	st, keep := s.snapshot()
	if !keep {
		return
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err == nil {
		err = writeFileAtomic(statePath(s.dir.path), string(b)+"\n")
	}
	if err != nil {
		s.log.Warn("write state file", "err", err)
	}
}

// snapshot returns what the state file holds: the generations with live
// processes. keep is false once the supervisor has stopped everything.
func (s *Supervisor) snapshot() (st savedState, keep bool) {
	s.listenMu.Lock()
	defer s.listenMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stateClosed {
		return st, false
	}
	st = savedState{Supervisor: os.Getpid(), Saved: time.Now(), Listen: s.cfg.Listen, LastGen: s.lastGen}
	if s.active != nil {
		st.Active = s.active.num
	}
	for _, g := range s.gens {
		sg := savedGen{Num: g.num, Release: savedRelease(g.release), State: g.state, Started: g.started}
		for _, w := range g.workers {
			if isClosed(w.exited) {
				continue
			}
			sg.Workers = append(sg.Workers, savedWorker{Index: w.index, PID: w.pid, Token: w.token, Admin: w.admin, Ready: w.ready})
		}
		if len(sg.Workers) > 0 {
			st.Gens = append(st.Gens, sg)
		}
	}
	for _, w := range s.group.Members() {
		st.Group = append(st.Group, w.token)
	}
	for _, r := range s.history {
		st.History = append(st.History, savedRelease(r))
	}
	return st, true
}

// closeState stops saving and removes the state file: nothing is left to
// adopt.
func (s *Supervisor) closeState() {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.mu.Lock()
	s.stateClosed = true
	s.mu.Unlock()
	os.Remove(statePath(s.dir.path))
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
