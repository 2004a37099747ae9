package launcher

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/control"
)

// TestAdminServedDuringHello: New sets up the admin socket while its hello
// makes the round trip through the supervisor (both are on a new worker's
// way to serving): a supervisor that answers only once /healthz answers
// there welcomes it. Refused, New closes the admin socket again.
func TestAdminServedDuringHello(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		name := "welcomed"
		if refuse {
			name = "refused"
		}
		t.Run(name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "la")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			ctlPath, admin := filepath.Join(dir, "control.sock"), filepath.Join(dir, "admin.sock")
			supervisedEnv(t, ctlPath, false)
			t.Setenv(control.EnvAdmin, admin)
			l, err := net.Listen("unix", ctlPath)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			served := make(chan error, 1)
			go func() { // ends after one hello, or when l closes
				c, err := l.Accept()
				if err != nil {
					served <- err
					return
				}
				defer c.Close()
				conn := control.NewConn(c)
				m, err := conn.Read(time.Now().Add(10 * time.Second))
				if err != nil {
					served <- err
					return
				}
				// The hello is in: the admin socket answers before the welcome.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				served <- healthz(ctx, admin)
				if refuse {
					conn.Write(control.Message{Type: control.TypeResult, Error: "unknown worker"})
					return
				}
				conn.Write(control.Message{Type: control.TypeWelcome, Version: m.Version})
				conn.Read(time.Now().Add(10 * time.Second)) // until the App closes
			}()
			app, err := New(quietOptions())
			if err := <-served; err != nil {
				t.Errorf("/healthz on the admin socket while the hello waited: %v", err)
			}
			if refuse {
				if err == nil {
					app.Close()
					t.Fatal("New welcomed by a refusal")
				}
				if _, err := net.Dial("unix", admin); err == nil {
					t.Error("the admin socket still accepts after New failed")
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			app.Close()
		})
	}
}

// healthz asks /healthz on the admin socket at path, every 10 ms until it
// answers 200 or ctx ends.
func healthz(ctx context.Context, path string) error {
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	defer client.CloseIdleConnections()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://worker/healthz", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
