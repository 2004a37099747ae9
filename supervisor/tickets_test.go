package supervisor

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/internal/ticketkeys"
)

// secrets returns the first byte of each key of ring, and the ring's
// length, to compare rings in messages.
func secrets(ring []control.TicketKey) [][]byte {
	var out [][]byte
	for _, k := range ring {
		out = append(out, k.Secret)
	}
	return out
}

func sameSecrets(a, b []control.TicketKey) bool {
	return slices.EqualFunc(a, b, func(x, y control.TicketKey) bool { return bytes.Equal(x.Secret, y.Secret) })
}

// lastRing waits until pid has got at least n rings and returns the last.
func lastRing(t *testing.T, fx *fakeEffects, pid, n int) []control.TicketKey {
	t.Helper()
	var got [][]control.TicketKey
	eventually(t, fmt.Sprintf("worker %d gets %d ring(s) of ticket keys", pid, n), func() error {
		if got = fx.gotTickets(pid); len(got) < n {
			return fmt.Errorf("got %d", len(got))
		}
		return nil
	})
	return got[len(got)-1]
}

// TestTicketKeysSharedAcrossGenerations: every generation whose library
// takes ticket keys gets the same ring; an older library gets none.
func TestTicketKeysSharedAcrossGenerations(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{ticketKeys: true}
	fx.behave["v2"] = behaviour{ticketKeys: true}
	fx.behave["v3"] = behaviour{} // an older library
	r := startRig(t, Config{Workers: 2, Probation: NoProbation}, fx, nil)
	r.waitStarted()
	g1 := r.gen(1).PIDs
	ring := lastRing(t, fx, g1[0], 1)
	if len(ring) != 1 || len(ring[0].Secret) != ticketkeys.SecretSize {
		t.Fatalf("first ring: %d keys; want 1 of %d bytes", len(ring), ticketkeys.SecretSize)
	}
	if other := lastRing(t, fx, g1[1], 1); !sameSecrets(other, ring) {
		t.Errorf("the two workers of generation 1 got different keys")
	}
	if _, err := r.upgrade("v2", false); err != nil {
		t.Fatal(err)
	}
	for _, pid := range r.gen(2).PIDs {
		if got := lastRing(t, fx, pid, 1); !sameSecrets(got, ring) {
			t.Errorf("worker %d of generation 2 got other keys than generation 1", pid)
		}
	}
	if _, err := r.upgrade("v3", false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	for _, pid := range r.gen(3).PIDs {
		if got := fx.gotTickets(pid); len(got) != 0 {
			t.Errorf("worker %d of an older library got ticket keys", pid)
		}
	}
	if n := testutil.ToFloat64(r.s.metrics.TicketKeys); n != 1 {
		t.Errorf("launcher_tls_ticket_keys = %v; want 1", n)
	}
	if c := testutil.ToFloat64(r.s.metrics.TicketKeyCreated); time.Since(time.Unix(int64(c), 0)) > time.Minute {
		t.Errorf("launcher_tls_ticket_key_created_timestamp_seconds = %v; want about now", c)
	}
	if strings.Contains(r.log.String(), base64.StdEncoding.EncodeToString(ring[0].Secret)) {
		t.Errorf("the log holds a ticket key")
	}
}

// TestTicketKeysRotate: a new key every period, handed to the workers
// with the previous ones still there to decrypt, the expired ones gone.
func TestTicketKeysRotate(t *testing.T) {
	fx := newFakeEffects(t)
	fx.behave["v1"] = behaviour{ticketKeys: true}
	r := startRig(t, Config{Probation: NoProbation, TicketRotate: time.Second, TicketLifetime: 2 * time.Second}, fx, nil)
	r.waitStarted()
	pid := r.gen(1).PIDs[0]
	start := time.Now()
	lastRing(t, fx, pid, 4)
	rings := fx.gotTickets(pid)
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("4 rings within %s; want one a second", took)
	}
	for i := 1; i < len(rings); i++ {
		prev, cur := rings[i-1], rings[i]
		if len(cur) != 2 {
			t.Errorf("ring %d: %d keys; want 2 (the new one, and the previous one for 2s)", i+1, len(cur))
		}
		if bytes.Equal(cur[0].Secret, prev[0].Secret) || len(cur) < 2 || !bytes.Equal(cur[1].Secret, prev[0].Secret) {
			t.Errorf("ring %d: %x; want a new key first, then the previous current one %x", i+1, secrets(cur), prev[0].Secret[:4])
		}
	}
}

// TestAdoptionTakesTicketKeysBack: a supervisor adopting workers takes
// the ring back from them (a worker that missed a rotation brings an
// older ring: the union is kept), hands it to all, and to the next
// generation.
func TestAdoptionTakesTicketKeysBack(t *testing.T) {
	now := time.Now()
	k := func(b byte, age time.Duration) control.TicketKey {
		return control.TicketKey{Secret: bytes.Repeat([]byte{b}, ticketkeys.SecretSize), Created: now.Add(-age).Unix()}
	}
	full := []control.TicketKey{k(3, time.Hour), k(2, 25*time.Hour), k(1, 49*time.Hour)}
	fx := newFakeEffects(t)
	fx.adoptable = map[int]string{501: "a", 502: "b"}
	fx.adoptKeys = map[int][]control.TicketKey{501: full, 502: full[1:]}
	fx.behave["v2"] = behaviour{ticketKeys: true}
	r := startRig(t, Config{Workers: 2, Listen: []string{"127.0.0.1:7"}, Probation: NoProbation}, fx, func(r *rig) {
		fx.saved = &savedState{Supervisor: 9, Listen: []string{"127.0.0.1:7"}, Active: 1, LastGen: 1,
			Gens: []savedGen{{Num: 1, Release: savedRelease{Version: "v1", Path: r.path("v1")}, State: StateActive,
				Workers: []savedWorker{{Index: 0, PID: 501, Token: "a", Ready: true}, {Index: 1, PID: 502, Token: "b", Ready: true}}}},
			Group: []string{"a", "b"},
		}
	})
	r.waitStarted()
	for _, pid := range []int{501, 502} {
		eventually(t, fmt.Sprintf("adopted worker %d has the whole ring", pid), func() error {
			if got := fx.gotTickets(pid); len(got) == 0 || !sameSecrets(got[len(got)-1], full) {
				return fmt.Errorf("got %d rings", len(got))
			}
			return nil
		})
	}
	if _, err := r.upgrade("v2", false); err != nil {
		t.Fatal(err)
	}
	for _, pid := range r.gen(2).PIDs {
		if got := lastRing(t, fx, pid, 1); !sameSecrets(got, full) {
			t.Errorf("the next generation's worker %d got %x; want the adopted ring", pid, secrets(got))
		}
	}
}

// TestTicketKeyFile: the operator's keys, in the file's order, read again
// at each upgrade; a file others may read is refused at start and at an
// upgrade, which then changes nothing.
func TestTicketKeyFile(t *testing.T) {
	keyLine := func(b byte) string {
		return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, ticketkeys.SecretSize)) + "\n"
	}
	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, []byte(keyLine(2)+keyLine(1)), 0o600); err != nil {
		t.Fatal(err)
	}
	fx := newFakeEffects(t)
	for _, v := range []string{"v1", "v2", "v3"} {
		fx.behave[v] = behaviour{ticketKeys: true}
	}
	r := startRig(t, Config{Probation: NoProbation, TicketKeyFile: file}, fx, nil)
	r.waitStarted()
	first := func(g int) []byte {
		var out []byte
		for _, k := range lastRing(t, fx, r.gen(g).PIDs[0], 1) {
			out = append(out, k.Secret[0])
		}
		return out
	}
	if got := first(1); !bytes.Equal(got, []byte{2, 1}) {
		t.Errorf("keys %v; want the file's, [2 1]", got)
	}
	// The operator rotates: a new key on top.
	if err := os.WriteFile(file, []byte(keyLine(3)+keyLine(2)+keyLine(1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.upgrade("v2", false); err != nil {
		t.Fatal(err)
	}
	if got := first(2); !bytes.Equal(got, []byte{3, 2, 1}) {
		t.Errorf("keys after the upgrade %v; want the file's new ones, [3 2 1]", got)
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := r.upgrade("v3", false); err == nil || !errors.Is(err, ticketkeys.ErrBadFile) {
		t.Errorf("upgrade with a key file others may read: %v; want refused", err)
	}
	if st := r.status(); len(st.Generations) != 2 {
		t.Errorf("%d generations after the refused upgrade; want 2", len(st.Generations))
	}
	// At start: a ConfigError (exit 2 from the CLI).
	_, err := newSupervisor(Config{Command: []string{"/bin/true"}, Listen: []string{"127.0.0.1:1"}, StateDir: t.TempDir(), TicketKeyFile: file}, fx)
	var ce *ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, ticketkeys.ErrBadFile) {
		t.Errorf("New with a key file others may read: %v; want a ConfigError", err)
	}
	_ = context.Background
}
