package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/launcherd/launcher/internal/control"
)

// rejoinWait bounds how long adoption waits for the adopted workers to dial
// the control socket again (they retry at least every second).
const rejoinWait = 5 * time.Second

// errAdoptedExit is the exit error of an adopted worker: it is not our
// child, so its exit status is not ours to read.
var errAdoptedExit = errors.New("exited (adopted: exit status unknown)")

// adopt takes over the workers a killed supervisor left running on this
// state directory, as its state file describes them. It reports whether a
// generation was adopted as the active one; if not, Run starts one.
func (s *Supervisor) adopt() (bool, error) {
	st, err := loadState(s.dir.path)
	if err != nil || st == nil {
		s.removeStaleAdminSockets(nil)
		return false, err
	}
	byToken := map[string]*worker{}
	var gens []*generation
	var live []*worker
	for _, sg := range st.Gens {
		g := &generation{num: sg.Num, release: release(sg.Release), state: sg.State, started: sg.Started}
		for _, sw := range sg.Workers {
			pidfd, ok := ourProcess(sw.PID, sw.Token)
			if !ok {
				continue
			}
			w := newWorker(g, sw.Index, sw.Token, sw.Admin)
			w.pid, w.pidfd, w.ready = sw.PID, pidfd, sw.Ready
			if w.ready {
				close(w.readyCh)
			}
			g.workers = append(g.workers, w)
			byToken[w.token] = w
			live = append(live, w)
		}
		if len(g.workers) > 0 {
			gens = append(gens, g)
		}
	}
	s.removeStaleAdminSockets(live)
	if len(live) == 0 {
		s.log.Info("state file of a killed supervisor: none of its workers is left", "supervisor_pid", st.Supervisor)
		return false, nil
	}
	if !slices.Equal(st.Listen, s.cfg.Listen) {
		for _, w := range live {
			unix.Close(w.pidfd)
		}
		return false, fmt.Errorf("workers of a killed supervisor still serve %v on %s (pids %v): start with the same --listen to adopt them, or stop them first",
			st.Listen, s.dir.path, pids(live))
	}

	// The kernel's group is as the state file says, minus the sockets
	// closed since; each close moved the last socket into the freed slot.
	// The order of those closes is unknown, so several can make the model
	// a guess: the steering that follows stays safe (it only ever sends
	// connections to listening sockets), and every generation but the
	// active one is released below, after which any order is exact.
	var group []*worker
	gone := map[*worker]bool{}
	for _, tok := range st.Group {
		w := byToken[tok]
		if w == nil {
			w = &worker{token: tok} // a placeholder for a closed socket
			gone[w] = true
		}
		group = append(group, w)
	}

	s.listenMu.Lock()
	s.mu.Lock()
	for _, w := range group {
		s.group.Join(w)
		w.listening = !gone[w]
	}
	for _, w := range group {
		if gone[w] {
			s.group.Leave(w)
		}
	}
	s.gens = gens
	s.lastGen = st.LastGen
	for _, g := range gens {
		s.lastGen = max(s.lastGen, g.num)
		if g.num == st.Active && g.state == StateActive {
			s.active = g
		}
	}
	for _, r := range st.History {
		s.history = append(s.history, release(r))
	}
	for _, w := range live {
		s.workersByToken[w.token] = w
	}
	s.mu.Unlock()
	s.listenMu.Unlock()
	for _, w := range live {
		go s.watchAdopted(w) // owned by the process: ends when it exits
	}
	s.markDirty()

	// Wait for them to dial again: steering and releasing need them.
	// A generation still starting rejoins only if it was ready: worth
	// waiting for when none is active, since it may be the one to adopt.
	ctx, cancel := context.WithTimeout(context.Background(), rejoinWait)
	defer cancel()
	noActive := s.activeGen() == nil
	for _, w := range live {
		if w.gen.state == StateStarting && !noActive {
			continue
		}
		select {
		case <-w.rejoined:
		case <-w.exited:
		case <-ctx.Done():
		}
	}
	if noActive {
		s.promoteReady(gens)
	}
	for _, g := range gens {
		s.log.Info("adopted generation", "generation", g.num, "version", g.release.Version, "state", g.state, "pids", pids(g.workers))
	}
	s.finishAdoption(gens)
	s.mu.Lock()
	active := s.active
	s.mu.Unlock()
	if active == nil {
		s.log.Warn("no active generation left to adopt: starting one")
		return false, nil
	}
	if err := s.resteer(); err != nil {
		s.log.Warn("steer after adoption", "err", err)
	}
	// Workers that died while no supervisor ran are started again, as any
	// crashed worker is.
	s.mu.Lock()
	var missing []int
	for i := 0; i < s.cfg.Workers; i++ {
		if !slices.ContainsFunc(active.workers, func(w *worker) bool { return w.index == i }) {
			missing = append(missing, i)
		}
	}
	s.mu.Unlock()
	for _, i := range missing {
		s.log.Warn("worker gone while no supervisor ran; restarting", "generation", active.num, "version", active.release.Version, "worker", i)
		s.scheduleRestart(active, i)
	}
	return true, nil
}

// promoteReady makes the newest starting generation whose workers all
// rejoined ready the active one. A supervisor killed after its first
// generation got ready, but before it wrote that down, leaves it so; and
// before anything steers, the kernel already gives it connections.
func (s *Supervisor) promoteReady(gens []*generation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(gens) - 1; i >= 0; i-- {
		g := gens[i]
		if g.state != StateStarting || !g.hasLive() {
			continue
		}
		ready := true
		for _, w := range g.workers {
			ready = ready && w.ready && isClosed(w.rejoined)
		}
		if ready {
			g.state = StateActive
			s.active = g
			s.history = append(s.history, g.release)
			s.log.Info("adopting a generation that was ready as the active one", "generation", g.num, "version", g.release.Version)
			return
		}
	}
}

// finishAdoption settles what the killed supervisor left half done: a
// generation still starting is stopped (its upgrade died with it), one on
// standby is retired (its probation cannot be judged across the restart),
// and draining ones are watched to their end.
func (s *Supervisor) finishAdoption(gens []*generation) {
	for _, g := range gens {
		s.mu.Lock()
		state := g.state
		var live []*worker
		for _, w := range g.workers {
			if !isClosed(w.exited) {
				live = append(live, w)
			}
		}
		s.mu.Unlock()
		switch {
		case g == s.active:
		case state == StateStarting:
			s.log.Warn("stopping a generation whose upgrade died with the previous supervisor", "generation", g.num, "version", g.release.Version)
			s.metrics.Upgrades.WithLabelValues("aborted").Inc()
			s.abortGeneration(g)
		case state == StateStandby:
			s.log.Info("retiring the standby generation: its probation ended with the previous supervisor", "generation", g.num, "version", g.release.Version)
			s.retire(g, live)
		default:
			s.mu.Lock()
			if g.state != StateFailed {
				g.state = StateDraining
			}
			var unreleased []*worker
			for _, w := range live {
				if !w.stopping {
					unreleased = append(unreleased, w)
				}
			}
			s.mu.Unlock()
			// Killed mid-release, the previous supervisor may have left
			// some listening.
			s.releaseWorkers(unreleased)
			s.watchDrain(g, live)
		}
	}
}

// ourProcess reports whether pid is still the worker that token names,
// and returns a pidfd for it: a pid alone could be reused by now.
func ourProcess(pid int, token string) (int, bool) {
	if pid <= 0 || token == "" {
		return -1, false
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, false
	}
	// Checked after the pidfd is open, so the answer is about the process
	// the pidfd holds.
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	want := []byte(control.EnvToken + "=" + token)
	if err != nil || !slices.ContainsFunc(bytes.Split(env, []byte{0}), func(kv []byte) bool { return bytes.Equal(kv, want) }) {
		unix.Close(fd)
		return -1, false
	}
	return fd, true
}

// watchAdopted waits for an adopted worker to exit. It is not our child,
// so its pidfd turning readable is all we learn.
func (s *Supervisor) watchAdopted(w *worker) {
	for {
		fds := []unix.PollFd{{Fd: int32(w.pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, -1)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || n > 0 {
			break
		}
	}
	s.onExit(w, errAdoptedExit)
	w.pidfdMu.Lock()
	unix.Close(w.pidfd)
	w.pidfd = -1
	w.pidfdMu.Unlock()
}

// removeStaleAdminSockets removes admin sockets no adopted worker owns.
func (s *Supervisor) removeStaleAdminSockets(keep []*worker) {
	entries, _ := os.ReadDir(filepath.Join(s.dir.path, adminDir))
	for _, e := range entries {
		path := filepath.Join(s.dir.path, adminDir, e.Name())
		if !slices.ContainsFunc(keep, func(w *worker) bool { return w.admin == path }) {
			os.Remove(path)
		}
	}
}

func pids(ws []*worker) []int {
	out := make([]int, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.pid)
	}
	return out
}

// rejoinWorker takes a worker dialing again after losing its supervisor:
// it says where it stands, and an adopted one gets a new stderr, since
// its old one was a pipe to the dead supervisor.
func (s *Supervisor) rejoinWorker(w *worker, conn *control.Conn, hello control.Message) error {
	welcome := control.Message{Type: control.TypeWelcome, Version: control.Version}
	if w.cmd == nil {
		pr, pw, err := os.Pipe()
		if err != nil {
			return err
		}
		uc, ok := conn.NetConn().(*net.UnixConn)
		if !ok {
			pr.Close()
			pw.Close()
			return errors.New("rejoin: not a unix connection")
		}
		err = control.SendFile(uc, welcome, pw)
		pw.Close()
		if err != nil {
			pr.Close()
			return err
		}
		go func() { // owned by the process: ends at its stderr's EOF
			defer pr.Close()
			w.tail.copyLines(os.Stderr, pr)
		}()
	} else if err := conn.Write(welcome); err != nil {
		return err
	}
	s.listenMu.Lock()
	s.mu.Lock()
	w.conn = conn
	if hello.Released {
		w.stopping = true
	}
	if hello.Ready && !w.ready {
		w.ready = true
		close(w.readyCh)
	}
	left := w.listening && !hello.Listening
	if left {
		s.group.Leave(w)
		w.listening = false
	}
	s.mu.Unlock()
	s.listenMu.Unlock()
	select {
	case <-w.rejoined:
	default:
		close(w.rejoined)
	}
	s.markDirty()
	s.log.Info("worker rejoined", "generation", w.gen.num, "version", w.gen.release.Version, "worker", w.index, "pid", w.pid,
		"listening", hello.Listening, "released", hello.Released)
	return nil
}
