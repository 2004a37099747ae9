package control

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// MaxMessage bounds one encoded message. Larger input is an error and the
// connection is dropped.
const MaxMessage = 64 << 10

// Roles of the first message.
const (
	RoleWorker = "worker"
	RoleClient = "client"
)

// Message types. Worker → supervisor: Hello, Listen, Listening, Ready,
// Steered, Released, Quiesced, Fail, Drained (with Cut when the drain was
// cut). Supervisor → worker: Welcome, Grant, Steer, Release, Quiesce,
// Standby, Resume, Collected, HandoffDone, TicketKeys. Client ↔ supervisor: Hello
// with Cmd, then Progress messages and one Result.
//
// The supervisor's requests Steer, Release and Quiesce are answered by
// Steered, Released and Quiesced, with the request's [Message.ID] from
// version 2 on. A worker's Listen is answered by Grant (or Fail), and its
// Drained by Collected when both sides have [CapFinalMetrics]; it sends
// each once per connection, so they need no ID.
const (
	TypeHello       = "hello"
	TypeWelcome     = "welcome"
	TypeListen      = "listen"
	TypeGrant       = "grant"
	TypeListening   = "listening"
	TypeReady       = "ready"
	TypeSteer       = "steer"
	TypeSteered     = "steered"
	TypeRelease     = "release"
	TypeReleased    = "released"
	TypeHandoffDone = "handoff-done"
	// TypeQuiesce asks a worker steered away from to wait until its accept
	// queues have stayed empty for SettleMS, keeping its listeners open;
	// it answers TypeQuiesced. Several workers quiesce at once, and each
	// release that follows needs only a short settle. Only workers whose
	// hello lists CapQuiesce get it.
	TypeQuiesce  = "quiesce"
	TypeQuiesced = "quiesced"
	// TypeStandby asks a worker steered away from to hand its keep-alive
	// clients over (Connection: close) while keeping its listeners, and
	// TypeResume to keep connections alive again. Neither has a reply.
	TypeStandby = "standby"
	TypeResume  = "resume"
	TypeFail    = "fail"
	// TypeDrained says a worker's drain is over: nothing is in flight and
	// its connections are closed, so its counters are final. Cut (with
	// Error) counts the requests a drain deadline cut.
	TypeDrained = "drained"
	// TypeCollected answers TypeDrained: the supervisor has read the
	// worker's final metrics on its admin socket, and the worker may exit.
	// A worker waits for it (at most CollectWait) only when the welcome of
	// its connection lists CapFinalMetrics, and its hello did too.
	TypeCollected = "collected"
	// TypeTicketKeys carries the TLS session-ticket keys (TicketKeys,
	// current first) from the supervisor to a worker whose hello lists
	// CapTicketKeys: once after the welcome and again after every change
	// (a rotation, an operator's new key file, an adoption's merge). A
	// standalone parent sends it to the process it hands over to. It has
	// no reply.
	TypeTicketKeys = "ticket-keys"
	TypeProgress   = "progress"
	TypeResult     = "result"
)

// TicketKey is one TLS session-ticket key on the wire: its 32 bytes
// (base64 in JSON) and its creation time in Unix seconds, which an
// adopting supervisor needs to keep the rotation schedule.
type TicketKey struct {
	Secret  []byte `json:"secret"`
	Created int64  `json:"created"`
}

// Message is every message of the protocol; each type uses a few fields.
type Message struct {
	Type    string `json:"type"`
	Version int    `json:"v,omitempty"`
	Role    string `json:"role,omitempty"`
	// ID numbers a request (Steer, Release, Quiesce) from version 2 on; its
	// reply (Steered, Released, Quiesced) carries the same ID. Zero means
	// none: a version-1 peer neither sends nor reads it.
	ID uint64 `json:"id,omitempty"`

	// Worker hello.
	Generation int    `json:"generation,omitempty"`
	Worker     int    `json:"worker,omitempty"`
	PID        int    `json:"pid,omitempty"`
	Token      string `json:"token,omitempty"`
	// Caps lists, in a worker's hello, what its library understands beyond
	// the first messages of version 1: the old generation of an upgrade
	// often runs a library older than the supervisor. In a Welcome it lists
	// what the supervisor will do that a worker must know of (see
	// CapFinalMetrics); supervisors before it send none.
	Caps []string `json:"caps,omitempty"`
	// A worker dialing again after losing its supervisor says so, and
	// says where it is: its listeners open, ready, released. The welcome
	// then carries a new stderr for it (see SendFile).
	Rejoin    bool `json:"rejoin,omitempty"`
	Listening bool `json:"listening,omitempty"`
	Ready     bool `json:"ready,omitempty"`
	Released  bool `json:"released,omitempty"`

	// Client commands.
	Cmd  string `json:"cmd,omitempty"`
	Arg  string `json:"arg,omitempty"`
	Wait bool   `json:"wait,omitempty"`
	// Canary (upgrade): the new generation's weights in turn, percent of
	// new connections, each held CanaryMS. A supervisor before them
	// ignores both: the upgrade is then not a canary.
	Canary   []int `json:"canary,omitempty"`
	CanaryMS int64 `json:"canary_ms,omitempty"`

	// Supervisor → worker.
	Slots    []int `json:"slots,omitempty"`
	SettleMS int64 `json:"settle_ms,omitempty"`
	DrainMS  int64 `json:"drain_ms,omitempty"`
	Naive    bool  `json:"naive,omitempty"`
	// HandshakesDone, in a quiesce or release, says that the TCP
	// handshakes under way on the port when the worker was steered away
	// from are waited for already (by another worker's quiesce, see
	// CapHandshakes): it waits for its accept queues only. Without it a
	// worker that knows of handshakes waits for them itself.
	HandshakesDone bool `json:"handshakes_done,omitempty"`
	// Quick, in a release, says that the worker's listeners were
	// quiesced and nothing has been steered to them since (the program
	// in place names only sockets this close does not move): one look at
	// an empty accept queue is enough, and the settle is not waited for.
	// A worker that does not know it settles SettleMS, which the
	// supervisor keeps at a millisecond for it.
	Quick bool `json:"quick,omitempty"`

	// Worker → supervisor: requests cut by a drain deadline, and the
	// connections it closed (CutConns, of a library that counts them;
	// a supervisor before it ignores the field).
	Cut      int64 `json:"cut,omitempty"`
	CutConns int64 `json:"cut_conns,omitempty"`

	// TicketKeys are TLS session-ticket keys, current first: in a
	// TypeTicketKeys message, and in the hello of a worker that rejoins,
	// so that the adopting supervisor takes the ring over. Secret: never
	// log a Message that may carry them.
	TicketKeys []TicketKey `json:"ticket_keys,omitempty"`

	// Replies.
	OK    bool            `json:"ok,omitempty"`
	Error string          `json:"error,omitempty"`
	Text  string          `json:"text,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// ErrTooLarge is returned when a peer sends a message over MaxMessage.
var ErrTooLarge = errors.New("control: message too large")

// Conn reads and writes messages on a stream connection. Reads are not
// safe for concurrent use; writes are.
type Conn struct {
	c  net.Conn
	r  *bufio.Reader
	mu sync.Mutex
}

// NewConn wraps c.
func NewConn(c net.Conn) *Conn { return &Conn{c: c, r: bufio.NewReaderSize(c, 4096)} }

// SendFile writes m on c with f attached (SCM_RIGHTS), in one message, so
// the receiver gets the file with that line. The caller keeps f.
func SendFile(c *net.UnixConn, m Message, f *os.File) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("control: encode %s: %w", m.Type, err)
	}
	if err := c.SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	oob, err := rights(f)
	if err != nil {
		return fmt.Errorf("control: send %s: %w", m.Type, err)
	}
	_, _, err = c.WriteMsgUnix(append(b, '\n'), oob, nil)
	return err
}

// ReadFile reads the first message on c, as sent by SendFile, and the
// file attached to it (nil if none). It returns a Conn for the rest of
// the conversation.
func ReadFile(c *net.UnixConn, deadline time.Time) (Message, *os.File, *Conn, error) {
	var m Message
	if err := c.SetReadDeadline(deadline); err != nil {
		return m, nil, nil, err
	}
	buf := make([]byte, MaxMessage+1)
	oob := make([]byte, rightsSpace)
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return m, nil, nil, err
	}
	f := parseRights(oob[:oobn])
	line, rest, ok := bytes.Cut(buf[:n], []byte{'\n'})
	if !ok {
		// The kernel delivers an attached file with the data sent with
		// it, and SendFile sends one whole line.
		if f != nil {
			f.Close()
		}
		return m, nil, nil, errors.New("control: message with a file not a whole line")
	}
	if err := json.Unmarshal(line, &m); err != nil {
		if f != nil {
			f.Close()
		}
		return m, nil, nil, fmt.Errorf("control: bad message: %w", err)
	}
	conn := &Conn{c: c, r: bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(rest)), c), 4096)}
	return m, f, conn, nil
}

// Warm encodes and decodes a Message once, so that encoding/json has
// built its codec for the type (a tenth of a millisecond or more, once
// per process) before the first message on the way to serving needs it:
// a fresh worker calls it while it dials the control socket.
func Warm() {
	b, _ := json.Marshal(Message{Type: TypeHello, Caps: []string{CapQuiesce}})
	var m Message
	json.Unmarshal(b, &m)
}

// Read reads one message. A deadline of zero means none.
func (c *Conn) Read(deadline time.Time) (Message, error) {
	var m Message
	if err := c.c.SetReadDeadline(deadline); err != nil {
		return m, err
	}
	line, err := readLine(c.r)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return m, fmt.Errorf("control: bad message: %w", err)
	}
	return m, nil
}

// Decode parses one encoded message, as Read does; it exists for fuzzing
// and tests.
func Decode(b []byte) (Message, error) {
	var m Message
	line, err := readLine(bufio.NewReader(io.LimitReader(bytes.NewReader(b), MaxMessage+2)))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return m, fmt.Errorf("control: bad message: %w", err)
	}
	return m, nil
}

// readLine reads up to a newline, refusing lines over MaxMessage without
// buffering them whole.
func readLine(r *bufio.Reader) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(buf)+len(chunk) > MaxMessage+1 {
			return nil, ErrTooLarge
		}
		buf = append(buf, chunk...)
		switch {
		case err == nil:
			return buf[:len(buf)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(buf) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// Write sends one message.
func (c *Conn) Write(m Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("control: encode %s: %w", m.Type, err)
	}
	if len(b) > MaxMessage {
		return ErrTooLarge
	}
	b = append(b, '\n')
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.c.SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	_, err = c.c.Write(b)
	return err
}

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.c }

// Capabilities, in a hello's or a welcome's Caps.
const (
	// CapQuiesce in a worker's hello says it understands TypeQuiesce.
	CapQuiesce = "quiesce"
	// CapFinalMetrics in a worker's hello says that, once drained, it
	// reports TypeDrained and waits for TypeCollected before it exits, at
	// most CollectWait and not after its connection is lost. In a
	// supervisor's welcome it says the supervisor will read the worker's
	// metrics then and answer: a worker waits only when both list it.
	// The supervisor serves those final values after the worker exits, so
	// its counters do not lose the requests of its last scrape interval.
	CapFinalMetrics = "final-metrics"
	// CapHandshakes in a worker's hello says its quiesce and release also
	// wait for the TCP handshakes under way on its ports when it was
	// steered away from (request sockets, which the accept queue does not
	// show yet), and that it understands Message.HandshakesDone. The
	// handshakes are those of the whole port, so one worker's quiesce
	// covers all the workers of its generation.
	CapHandshakes = "handshakes"
	// CapTicketKeys in a worker's hello says it applies the TLS
	// session-ticket keys of TypeTicketKeys to its TLS configs, and that
	// a rejoin hello carries the keys it has. Only such workers are sent
	// them: an older one keeps crypto/tls's own keys.
	CapTicketKeys = "ticket-keys"
	// CapReadyHealth in a worker's hello says its TypeReady comes after
	// its own health check, the one /healthz on its admin socket runs:
	// passed, or failed with the reason in Message.Error. In a
	// supervisor's welcome it says the supervisor takes such a ready as
	// checked, without asking /healthz (a round trip of about half a
	// millisecond on the way to serving). A worker checks itself only
	// when both list it.
	CapReadyHealth = "ready-health"
	// CapListenFree in a welcome says every listen is granted: the peer
	// has nothing to order (a standalone parent handing over to its one
	// new process), so the worker listens at once and reports
	// TypeListening without asking with TypeListen and waiting for
	// TypeGrant, a round trip on its way to serving. A supervisor, which
	// grants one worker at a time to know each socket's slot in the
	// reuseport group, never lists it; without it a worker asks.
	CapListenFree = "listen-free"
	// CapWelcomeGrant in a worker's hello says it listens as soon as it
	// reads a welcome that lists it, before its app calls Listen, and
	// reports TypeListening (or TypeFail) without asking with
	// TypeListen. In a supervisor's welcome it says the listen is
	// granted with the welcome: the supervisor made this worker's the
	// grant under way (none other was, and no close), so the group model
	// stays exact, and a round trip on the worker's way to serving goes.
	// A supervisor lists it only where a steering program keeps the new
	// sockets from connections until they are ready; without it a worker
	// asks.
	CapWelcomeGrant = "welcome-grant"
)

// CollectWait bounds how long a drained worker waits for TypeCollected.
// The supervisor reads the final metrics within about a second, or not at
// all.
const CollectWait = 2 * time.Second

// WorkerCaps is what workers built with this package understand.
func WorkerCaps() []string {
	return []string{CapQuiesce, CapFinalMetrics, CapHandshakes, CapTicketKeys, CapReadyHealth, CapWelcomeGrant}
}

// HasCap reports whether caps lists c.
func HasCap(caps []string, c string) bool {
	for _, x := range caps {
		if x == c {
			return true
		}
	}
	return false
}

// Environment variables the supervisor sets for each worker. The app-side
// API in package launcher reads them; an app never needs to.
const (
	EnvGeneration = "LAUNCHER_GENERATION" // generation number, 1, 2, …
	EnvVersion    = "LAUNCHER_VERSION"    // release label, e.g. v2
	EnvListen     = "LAUNCHER_LISTEN"     // comma-separated listen addresses
	EnvControl    = "LAUNCHER_CONTROL"    // unix socket: readiness, steering, drain
	EnvAdmin      = "LAUNCHER_ADMIN"      // unix socket path for the worker's /metrics and /healthz
	EnvWorker     = "LAUNCHER_WORKER"     // worker index within the generation, 0…N-1
	EnvToken      = "LAUNCHER_TOKEN"      // secret proving the worker is the supervisor's child
	EnvHandoff    = "LAUNCHER_HANDOFF"    // "1": started by a standalone app's SIGHUP, not a supervisor
	// EnvExec is the path a standalone app's SIGHUP starts again, when
	// its own argv[0] is not that path: set by the process that handed
	// over to it (the path it started, a "current" symlink unresolved),
	// or by a release script that execs the app elsewhere.
	EnvExec = "LAUNCHER_EXEC"
	// EnvExecArgs are the arguments (a JSON array of strings) EnvExec is
	// started with, when they are not the process's own: set by the
	// process that handed over (those it started with), so that flags a
	// release script adds before exec'ing the app stay with that release.
	EnvExecArgs = "LAUNCHER_EXEC_ARGS"
)

// WithoutLauncherEnv returns env without any LAUNCHER_* variable, so a child
// gets only the values its parent sets for it.
func WithoutLauncherEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "LAUNCHER_") {
			out = append(out, kv)
		}
	}
	return out
}
