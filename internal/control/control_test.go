package control

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Message
		wantErr error
	}{
		{"hello", `{"type":"hello","v":1,"role":"client","cmd":"status"}` + "\n",
			Message{Type: TypeHello, Version: 1, Role: RoleClient, Cmd: "status"}, nil},
		{"steer", `{"type":"steer","slots":[2,3]}` + "\n", Message{Type: TypeSteer, Slots: []int{2, 3}}, nil},
		{"too large", `{"type":"` + strings.Repeat("x", MaxMessage) + `"}` + "\n", Message{}, ErrTooLarge},
		{"truncated", `{"type":"hello"`, Message{}, nil},
		{"not json", "hello\n", Message{}, nil},
		{"empty", "", Message{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.in))
			if tt.want.Type == "" {
				if err == nil {
					t.Fatalf("Decode(%q) = %+v, nil; want an error", tt.name, got)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v; want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != tt.want.Type || got.Cmd != tt.want.Cmd || len(got.Slots) != len(tt.want.Slots) {
				t.Fatalf("got = %+v; want %+v", got, tt.want)
			}
		})
	}
}

func TestConnRoundTripAndLimits(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ca, cb := NewConn(a), NewConn(b)
	go ca.Write(Message{Type: TypeRelease, SettleMS: 50, DrainMS: 30000})
	m, err := cb.Read(time.Now().Add(time.Second))
	if err != nil || m.Type != TypeRelease || m.SettleMS != 50 || m.DrainMS != 30000 {
		t.Fatalf("got = %+v, %v; want the release message", m, err)
	}
	// A slow client that never finishes its line is cut by the deadline.
	go a.Write([]byte(`{"type":"he`))
	if _, err := cb.Read(time.Now().Add(50 * time.Millisecond)); err == nil {
		t.Fatal("Read of a never-finished line returned no error")
	}
	if err := ca.Write(Message{Type: "x", Text: strings.Repeat("y", MaxMessage)}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Write of an oversized message = %v; want ErrTooLarge", err)
	}
}

func TestWithoutLauncherEnv(t *testing.T) {
	got := WithoutLauncherEnv([]string{"PATH=/bin", "LAUNCHER_TOKEN=x", "HOME=/root", "LAUNCHER_LISTEN=:1"})
	if strings.Join(got, " ") != "PATH=/bin HOME=/root" {
		t.Fatalf("got = %v; want PATH and HOME only", got)
	}
}

// FuzzDecode: the decoder never panics and never accepts more than
// MaxMessage bytes, whatever a peer sends; what it accepts encodes again
// to the same type, version and ID, and a refusal check never panics.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"type":"hello","v":1,"role":"worker","token":"abc"}` + "\n"))
	f.Add([]byte(`{"type":"hello","v":2,"role":"worker","token":"abc","caps":["quiesce"]}` + "\n"))
	f.Add([]byte(`{"type":"steer","id":3,"slots":[0,1,2]}` + "\n"))
	f.Add([]byte(`{"type":"result","error":"protocol: want hello version 1"}` + "\n"))
	f.Add([]byte("\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		if len(b) > MaxMessage+1 && !strings.Contains(string(b[:MaxMessage+1]), "\n") {
			t.Fatalf("accepted a line over MaxMessage: %+v", m)
		}
		Fallback(m, Version)
		enc, err := json.Marshal(m)
		if err != nil {
			return // e.g. Data that is not valid JSON on its own
		}
		again, err := Decode(append(enc, '\n'))
		if err == nil && (again.Type != m.Type || again.Version != m.Version || again.ID != m.ID) {
			t.Fatalf("decoded %+v, after encoding again %+v", m, again)
		}
	})
}

// TestSendFile: a file sent with a message arrives with it, and messages
// written right after it are read from the returned Conn, in order.
func TestSendFile(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	a, b := conn(fds[0]), conn(fds[1])
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if err := SendFile(a, Message{Type: TypeWelcome, Version: Version}, pw); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := NewConn(a).Write(Message{Type: TypeSteer, Slots: []int{1}}); err != nil {
		t.Fatal(err)
	}
	m, f, rest, err := ReadFile(b, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != TypeWelcome || f == nil {
		t.Fatalf("got %+v with file %v; want welcome with a file", m, f)
	}
	if _, err := f.WriteString("via the passed file\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	buf := make([]byte, 64)
	n, _ := pr.Read(buf)
	if got := string(buf[:n]); got != "via the passed file\n" {
		t.Errorf("pipe read %q", got)
	}
	m, err = rest.Read(time.Now().Add(5 * time.Second))
	if err != nil || m.Type != TypeSteer || len(m.Slots) != 1 {
		t.Errorf("next message %+v, %v; want the steer", m, err)
	}
}

// TestCaps: a welcome's capabilities decode as a hello's do, and HasCap
// finds one among others, never a prefix or an empty name.
func TestCaps(t *testing.T) {
	tests := []struct {
		in   string
		cap  string
		want bool
	}{
		{`{"type":"welcome","v":2,"caps":["final-metrics"]}`, CapFinalMetrics, true},
		{`{"type":"hello","v":2,"role":"worker","caps":["quiesce","final-metrics"]}`, CapFinalMetrics, true},
		{`{"type":"hello","v":2,"role":"worker","caps":["quiesce"]}`, CapFinalMetrics, false},
		{`{"type":"welcome","v":1}`, CapFinalMetrics, false}, // a supervisor before it
		{`{"type":"welcome","v":2,"caps":["final"]}`, CapFinalMetrics, false},
		{`{"type":"welcome","v":2,"caps":[""]}`, "", true},
	}
	for _, tt := range tests {
		m, err := Decode([]byte(tt.in + "\n"))
		if err != nil {
			t.Fatalf("Decode(%s): %v", tt.in, err)
		}
		if got := HasCap(m.Caps, tt.cap); got != tt.want {
			t.Errorf("HasCap(%q of %s, %q) = %v; want %v", m.Caps, tt.in, tt.cap, got, tt.want)
		}
	}
}
