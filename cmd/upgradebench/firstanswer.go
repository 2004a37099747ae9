package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/launcherd/launcher/internal/rig"
)

// A trigger's time to the first answer from the new version, as one
// poller sees it: a GET / on a new connection every pollGap, from the
// trigger until a body names the new version. It is the figure the
// fork-based peers (tableflip's SIGHUP) are compared on.

// getVersion sends one GET / with Connection: close and returns the
// version its body names ("hello from X").
func getVersion(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 100))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(strings.TrimPrefix(string(b), "hello from ")), nil
}

// pollFor polls addr from now until it answers version, and returns when
// it did (or the zero time once stop is closed or timeout has passed).
func pollFor(addr, version string, timeout time.Duration, stop <-chan struct{}) time.Time {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if v, err := getVersion(addr); err == nil && v == version {
			return time.Now()
		}
		select {
		case <-stop:
			return time.Time{}
		case <-time.After(pollGap):
		}
	}
	return time.Time{}
}

// sighupService is a service run alone through a "current" symlink and
// upgraded the way tableflip's users do it: point the symlink at the
// other release, send SIGHUP to the serving process. The process
// re-executes the path it was started with (the symlink), hands over its
// listener and writes the pid file once the new process serves; the pid
// file says which process serves.
type sighupService struct {
	dir, addr, current, pidFile string
	release                     func(version string) string
	pids                        map[int]bool // every process started, to kill at stop
}

// startSIGHUP starts release("v1") alone and waits for its first answer.
// Stop it with stop.
func startSIGHUP(ctx context.Context, release func(version string) string) (*sighupService, error) {
	dir, err := os.MkdirTemp("", "upgradebench-hup-")
	if err != nil {
		return nil, err
	}
	s := &sighupService{dir: dir, current: filepath.Join(dir, "current"), pidFile: filepath.Join(dir, "hello.pid"), release: release, pids: map[int]bool{}}
	if s.addr, err = rig.FreeAddr(); err != nil {
		s.stop()
		return nil, err
	}
	if err := s.point("v1"); err != nil {
		s.stop()
		return nil, err
	}
	cmd := exec.Command(filepath.Join(s.current, filepath.Base(release("v1"))), "-addr", s.addr, "-pidfile", s.pidFile)
	if err := cmd.Start(); err != nil {
		s.stop()
		return nil, err
	}
	go cmd.Wait() // reaps the first process once it has handed over
	s.pids[cmd.Process.Pid] = true
	if pollFor(s.addr, "v1", 10*time.Second, ctx.Done()).IsZero() {
		s.stop()
		return nil, fmt.Errorf("standalone %s: no answer from v1", release("v1"))
	}
	// The process may answer before it has written its pid file (Ready
	// writes it after the server has started): the first SIGHUP needs it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, err := readPID(s.pidFile); err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.stop()
			return nil, fmt.Errorf("standalone %s: no pid file %s 5s after its first answer", release("v1"), s.pidFile)
		}
	}
	return s, nil
}

// point makes the current symlink name version's release directory.
func (s *sighupService) point(version string) error {
	return repoint(s.current, filepath.Dir(s.release(version)))
}

// repoint makes the symlink current name dir, atomically (a new link
// renamed over the old one).
func repoint(current, dir string) error {
	tmp := current + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(dir, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, current)
}

// upgrade points the symlink at version, sends SIGHUP to the serving
// process (by trigger, given its pid, when not nil) and returns the time
// from the trigger to the first answer from version. It returns once the
// old process has exited, so that the next upgrade starts from one
// process (tableflip refuses an upgrade while the parent of the serving
// process lives).
func (s *sighupService) upgrade(ctx context.Context, version string, trigger func(pid int) error) (time.Duration, error) {
	pid, err := readPID(s.pidFile)
	if err != nil {
		return 0, err
	}
	s.pids[pid] = true
	if err := s.point(version); err != nil {
		return 0, err
	}
	if trigger == nil {
		trigger = func(pid int) error { return syscall.Kill(pid, syscall.SIGHUP) }
	}
	start := time.Now()
	if err := trigger(pid); err != nil {
		return 0, err
	}
	at := pollFor(s.addr, version, 10*time.Second, ctx.Done())
	if at.IsZero() {
		return 0, fmt.Errorf("SIGHUP to %d: no answer from %s", pid, version)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if p, err := readPID(s.pidFile); err == nil && p != pid {
			s.pids[p] = true
			if gone(pid) {
				break
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("SIGHUP to %d: not handed over and gone within 5s", pid)
		}
		time.Sleep(time.Millisecond)
	}
	return at.Sub(start), nil
}

// stop kills every process the service started and removes its files.
func (s *sighupService) stop() {
	for pid := range s.pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	os.RemoveAll(s.dir)
}

// gone reports whether process pid has exited: no /proc entry, or a
// zombie its new parent has not reaped yet (proc(5): state Z).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) == 0 || f[0] == "Z" || f[0] == "X"
}

// standaloneSIGHUP starts release v1 alone and n times upgrades it by
// SIGHUP (the launcher's standalone handover), timing SIGHUP -> first
// answer from the new version.
func standaloneSIGHUP(ctx context.Context, r *rig.Rig, n int) ([]time.Duration, error) {
	s, err := startSIGHUP(ctx, r.Release)
	if err != nil {
		return nil, err
	}
	defer s.stop()
	var out []time.Duration
	version := "v1"
	for k := 0; k < n; k++ {
		version = otherVersion(version)
		d, err := s.upgrade(ctx, version, nil)
		if err != nil {
			return nil, fmt.Errorf("SIGHUP %d: %w", k+1, err)
		}
		out = append(out, d)
		time.Sleep(50 * time.Millisecond)
	}
	return out, nil
}

func otherVersion(v string) string { return map[string]string{"v1": "v2", "v2": "v1"}[v] }

func readPID(file string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
