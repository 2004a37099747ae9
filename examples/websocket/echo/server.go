package echo

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/coder/websocket"
)

// writeTimeout bounds a write of the server's; a client that does not read
// for this long is dropped.
const writeTimeout = 10 * time.Second

// Server is an http.Handler that accepts WebSocket connections and echoes
// every message with the server's generation. Create it with [NewServer]
// and run [Server.Run]; it is safe for concurrent use.
type Server struct {
	gen     int
	version string
	pid     int
	log     *slog.Logger

	join  chan *websocket.Conn // a handler's new socket, for the set
	leave chan *websocket.Conn // a handler's socket that is done
	done  chan struct{}        // closed when Run returns
}

// NewServer returns a Server whose echoes carry generation and version
// (from launcher.App.Generation and launcher.App.Version); log may be
// nil.
func NewServer(generation int, version string, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		gen: generation, version: version, pid: os.Getpid(), log: log,
		join: make(chan *websocket.Conn), leave: make(chan *websocket.Conn),
		done: make(chan struct{}),
	}
}

// Run owns the set of open sockets until ctx ends. Once draining is
// closed (pass launcher.App.Stopping: the listeners are released and the
// process must drain), it closes each socket with 1001 "going away", and
// any socket opened after that at once (an upgrade request that was in
// flight on a kept-alive connection). Sockets still open when ctx ends are
// left to their handlers.
func (s *Server) Run(ctx context.Context, draining <-chan struct{}) {
	defer close(s.done)
	open := make(map[*websocket.Conn]struct{})
	gone := false
	for {
		select {
		case c := <-s.join:
			if gone {
				go goAway(c)
				continue
			}
			open[c] = struct{}{}
		case c := <-s.leave:
			delete(open, c)
		case <-draining:
			draining, gone = nil, true
			s.log.Info("draining: closing websockets with 1001 going away", "websockets", len(open))
			for c := range open {
				go goAway(c) // the close handshake waits for the client's close frame: one slow client must not hold up the others
			}
			clear(open)
		case <-ctx.Done():
			return
		}
	}
}

// goAway closes c with 1001 "going away". It returns once the client has
// answered with its close frame, or after the library's 5 s bound on the
// close handshake; the handler reading c sees the close then and returns.
func goAway(c *websocket.Conn) { c.Close(websocket.StatusGoingAway, GoingAway) }

// ServeHTTP upgrades the request to a WebSocket, says hello, and echoes
// every message until the connection ends.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered the request with the error
	}
	defer c.CloseNow()
	select {
	case s.join <- c:
	case <-s.done:
		goAway(c)
		return
	}
	defer func() {
		select {
		case s.leave <- c:
		case <-s.done:
		}
	}()
	// r.Context() is not cancelled when a hijacked connection closes; the
	// reads below end with the connection (a close frame or an error).
	ctx := r.Context()
	if err := s.write(ctx, c, Message{}); err != nil {
		return
	}
	for {
		var m Message
		typ, b, err := c.Read(ctx)
		if err != nil {
			return
		}
		if typ != websocket.MessageText || json.Unmarshal(b, &m) != nil {
			c.Close(websocket.StatusUnsupportedData, "want JSON text")
			return
		}
		if err := s.write(ctx, c, Message{Seq: m.Seq, Data: m.Data}); err != nil {
			return
		}
	}
}

// write sends m stamped with this server's generation, version and pid.
func (s *Server) write(ctx context.Context, c *websocket.Conn, m Message) error {
	m.Generation, m.Version, m.PID = s.gen, s.version, s.pid
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	return c.Write(ctx, websocket.MessageText, b)
}
