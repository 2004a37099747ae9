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

// standaloneSIGHUP starts release v1 alone through a "current" symlink,
// and n times points the symlink at the other release and sends SIGHUP
// to the serving process (the launcher's standalone handover, as
// tableflip's users do it), timing SIGHUP → first answer from the new
// version. The pid file says which process serves.
func standaloneSIGHUP(ctx context.Context, r *rig.Rig, n int) ([]time.Duration, error) {
	dir, err := os.MkdirTemp("", "upgradebench-hup-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	addr, err := rig.FreeAddr()
	if err != nil {
		return nil, err
	}
	current := filepath.Join(dir, "current")
	point := func(v string) error {
		tmp := current + ".tmp"
		os.Remove(tmp)
		if err := os.Symlink(filepath.Dir(r.Release(v)), tmp); err != nil {
			return err
		}
		return os.Rename(tmp, current)
	}
	if err := point("v1"); err != nil {
		return nil, err
	}
	pidFile := filepath.Join(dir, "hello.pid")
	cmd := exec.Command(filepath.Join(current, "hello"), "-addr", addr, "-pidfile", pidFile)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go cmd.Wait() // reaps the first process once it has handed over
	pids := map[int]bool{cmd.Process.Pid: true}
	defer func() {
		for pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	if pollFor(addr, "v1", 10*time.Second, ctx.Done()).IsZero() {
		return nil, fmt.Errorf("standalone hello: no answer from v1")
	}
	var out []time.Duration
	version := "v1"
	for k := 0; k < n; k++ {
		version = map[string]string{"v1": "v2", "v2": "v1"}[version]
		pid, err := readPID(pidFile)
		if err != nil {
			return nil, err
		}
		pids[pid] = true
		if err := point(version); err != nil {
			return nil, err
		}
		start := time.Now()
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			return nil, err
		}
		at := pollFor(addr, version, 10*time.Second, ctx.Done())
		if at.IsZero() {
			return nil, fmt.Errorf("SIGHUP %d: no answer from %s", k+1, version)
		}
		out = append(out, at.Sub(start))
		// The new process writes the pid file once it serves alone; the
		// old one drains meanwhile.
		deadline := time.Now().Add(5 * time.Second)
		for {
			if p, err := readPID(pidFile); err == nil && p != pid {
				pids[p] = true
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("SIGHUP %d: the pid file still names %d", k+1, pid)
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return out, nil
}

func readPID(file string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
