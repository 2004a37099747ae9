package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/launcherd/launcher/internal/control"
)

// ErrNotRunning is returned by [Call] when no supervisor serves the state
// directory.
var ErrNotRunning = errors.New("no supervisor running")

// Call sends one command to the supervisor of stateDir and returns its
// result, passing each progress line to progress. A failed command is
// returned as an error with the supervisor's message.
func Call(ctx context.Context, stateDir, cmd, arg string, wait bool, progress func(string)) (control.Message, error) {
	sock := ControlSocket(stateDir)
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	c, err := d.DialContext(dctx, "unix", sock)
	cancel()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return control.Message{}, fmt.Errorf("%s: %w on %s (start one with: launcher start --state-dir %s ...)", cmd, ErrNotRunning, stateDir, stateDir)
		}
		return control.Message{}, fmt.Errorf("connect to supervisor: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	conn := control.NewConn(c)
	if err := conn.Write(control.Message{Type: control.TypeHello, Version: control.Version, Role: control.RoleClient, Cmd: cmd, Arg: arg, Wait: wait}); err != nil {
		// A supervisor that refuses a peer says why before it closes: the
		// reason is worth more than the broken pipe.
		if m, rerr := conn.Read(time.Now().Add(time.Second)); rerr == nil && m.Type == control.TypeResult && m.Error != "" {
			return m, errors.New(m.Error)
		}
		return control.Message{}, fmt.Errorf("send %s: %w", cmd, err)
	}
	for {
		m, err := conn.Read(time.Time{})
		if err != nil {
			if ctx.Err() != nil {
				return control.Message{}, ctx.Err()
			}
			return control.Message{}, fmt.Errorf("%s: supervisor closed the connection: %w", cmd, err)
		}
		switch m.Type {
		case control.TypeProgress:
			if progress != nil {
				progress(m.Text)
			}
		case control.TypeResult:
			if !m.OK {
				return m, errors.New(m.Error)
			}
			return m, nil
		}
	}
}

// GetStatus returns the status of the supervisor of stateDir.
func GetStatus(ctx context.Context, stateDir string) (Status, error) {
	var st Status
	m, err := Call(ctx, stateDir, "status", "", false, nil)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(m.Data, &st); err != nil {
		return st, fmt.Errorf("status: %w", err)
	}
	return st, nil
}
