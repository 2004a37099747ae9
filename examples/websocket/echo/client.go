package echo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Client sends numbered messages to a [Server], one every Interval with at
// most Window unanswered, and follows the service across generations:
// whenever its connection ends (a close frame with 1001 "going away" from a
// draining generation, or any other way) it dials the same URL again and
// first resends, in order, every message whose echo has not come. Set the
// fields before [Client.Run]; zero values take the defaults given.
//
// Delivery is at least once, deduplicated by Seq: the first echo of a Seq
// answers it; a later one is counted in [Report.Duplicates] and otherwise
// ignored. Against a Server that closes with a close frame, none occurs.
type Client struct {
	URL      string        // ws://host:port/echo
	Name     string        // prefix of every message's Data
	Interval time.Duration // between messages; default 10 ms
	Window   int           // messages sent and not yet echoed, at most; default 8
	// Redial is the pause after a failed dial before the next; default
	// 50 ms.
	Redial time.Duration
	// Finish bounds how long Run waits, once its ctx ends, for the echoes
	// still due (redialing if need be); default 5 s.
	Finish time.Duration

	gen atomic.Int64 // generation of the current connection's hello, 0 before
}

// Session is what happened on one connection.
type Session struct {
	Generation int    // from the server's hello; 0 if none came
	Version    string // the same
	PID        int    // the same
	Echoed     int    // messages answered on it
	Resent     int    // messages sent again on it, unanswered on the previous ones
	// Close is the status of the close frame that ended the connection
	// (websocket.StatusGoingAway from a draining server), or -1 if it
	// ended without one: a reset, or an EOF.
	Close websocket.StatusCode
	// ByClient is true for the last connection, closed by Run itself
	// (status 1000) once every echo had come.
	ByClient bool
	Err      error // how it ended, as the reader saw it
}

// Report is what [Client.Run] saw.
type Report struct {
	Sent       uint64 // messages, Seq 1…Sent; resends not counted
	Answered   uint64 // messages echoed at least once
	Duplicates int    // echoes of a Seq already answered (or never sent)
	Mismatched int    // echoes whose Data differed from what was sent
	Lost       []uint64
	Sessions   []Session
	DialErrors int
}

// Generation returns the generation the client is connected to, from the
// server's hello, or 0 between connections.
func (c *Client) Generation() int { return int(c.gen.Load()) }

// Run sends messages until ctx ends, then waits for the echoes still due
// (at most Finish), closes its connection with status 1000 and returns
// what it saw. It returns an error only when it could not finish: echoes
// still due after Finish, listed in Report.Lost.
func (c *Client) Run(ctx context.Context) (Report, error) {
	c.setDefaults()
	s := &run{c: c, pending: make(map[uint64]string)}
	// finish outlives ctx: the echoes of messages sent before ctx ended
	// are still waited for, on a new connection if need be.
	finish, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	go func() { // ends with Run (cancel) or after Finish
		select {
		case <-ctx.Done():
			t := time.NewTimer(c.Finish)
			defer t.Stop()
			select {
			case <-t.C:
				cancel()
			case <-finish.Done():
			}
		case <-finish.Done():
		}
	}()
	for {
		if ctx.Err() != nil && len(s.pending) == 0 {
			break
		}
		if finish.Err() != nil {
			break
		}
		conn, _, err := websocket.Dial(finish, c.URL, nil)
		if err != nil {
			s.rep.DialErrors++
			select {
			case <-time.After(c.Redial):
			case <-finish.Done():
			}
			continue
		}
		sess := s.session(ctx, finish, conn)
		c.gen.Store(0)
		s.rep.Sessions = append(s.rep.Sessions, sess)
		if sess.ByClient {
			break
		}
	}
	s.rep.Sent = s.seq
	for seq := range s.pending {
		s.rep.Lost = append(s.rep.Lost, seq)
	}
	slices.Sort(s.rep.Lost)
	if len(s.rep.Lost) > 0 {
		return s.rep, fmt.Errorf("%d message(s) not echoed within %s of the end", len(s.rep.Lost), c.Finish)
	}
	return s.rep, nil
}

func (c *Client) setDefaults() {
	if c.Interval <= 0 {
		c.Interval = 10 * time.Millisecond
	}
	if c.Window <= 0 {
		c.Window = 8
	}
	if c.Redial <= 0 {
		c.Redial = 50 * time.Millisecond
	}
	if c.Finish <= 0 {
		c.Finish = 5 * time.Second
	}
}

// run is the state of one Client.Run, owned by its goroutine.
type run struct {
	c       *Client
	seq     uint64            // the last Seq sent
	pending map[uint64]string // Seq → Data, sent and not echoed
	rep     Report
}

// event is a frame read, or the error that ended the reads.
type event struct {
	m   Message
	err error
}

// session runs one connection: it resends what is pending, sends a
// message every Interval while ctx lasts, and returns when the connection
// ends, or when it has closed it itself after ctx ended and every echo
// came (or finish ended).
func (s *run) session(ctx, finish context.Context, conn *websocket.Conn) Session {
	c := s.c
	sess := Session{Close: -1}
	events := make(chan event, c.Window+2)
	go func() { // ends when the connection does; session drains events until then
		for {
			typ, b, err := conn.Read(finish)
			if err != nil {
				events <- event{err: err}
				return
			}
			var m Message
			if typ != websocket.MessageText {
				err = errors.New("binary frame")
			} else {
				err = json.Unmarshal(b, &m)
			}
			if err != nil {
				conn.Close(websocket.StatusUnsupportedData, "want JSON text")
				events <- event{err: fmt.Errorf("bad frame: %w", err)}
				return
			}
			events <- event{m: m}
		}
	}()
	broken := false // a write failed: only the reader's end is awaited
	send := func(seq uint64, data string) {
		if broken {
			return
		}
		b, _ := json.Marshal(Message{Seq: seq, Data: data})
		wctx, cancel := context.WithTimeout(finish, writeTimeout)
		defer cancel()
		if conn.Write(wctx, websocket.MessageText, b) != nil {
			// The server may have closed the connection: its close frame,
			// read by the reader, says how. Else the failed write has
			// closed it and the reader ends too.
			broken = true
		}
	}
	resend := slices.Sorted(maps.Keys(s.pending))
	for _, seq := range resend {
		send(seq, s.pending[seq])
	}
	sess.Resent = len(resend)

	tick := time.NewTicker(c.Interval)
	defer tick.Stop()
	done, finished := ctx.Done(), finish.Done()
	closing := false
	for {
		if done == nil && len(s.pending) == 0 && !closing && !broken {
			// Every echo is in: close ourselves, then read to the end.
			closing, sess.ByClient = true, true
			go conn.Close(websocket.StatusNormalClosure, "done") // ends with the close handshake, at most 5 s
		}
		select {
		case ev := <-events:
			if ev.err != nil {
				if !sess.ByClient {
					sess.Close = websocket.CloseStatus(ev.err)
				}
				sess.Err = ev.err
				conn.CloseNow()
				return sess
			}
			s.receive(&sess, ev.m)
		case <-tick.C:
			if done != nil && len(s.pending) < c.Window {
				s.seq++
				data := fmt.Sprintf("%s-%d", c.Name, s.seq)
				s.pending[s.seq] = data
				send(s.seq, data)
			}
		case <-done:
			done = nil
		case <-finished:
			finished = nil
			conn.CloseNow() // the reader ends with an error
		}
	}
}

// receive handles one frame from the server.
func (s *run) receive(sess *Session, m Message) {
	if m.Seq == 0 { // hello
		sess.Generation, sess.Version, sess.PID = m.Generation, m.Version, m.PID
		s.c.gen.Store(int64(m.Generation))
		return
	}
	data, ok := s.pending[m.Seq]
	if !ok {
		s.rep.Duplicates++
		return
	}
	if m.Data != data {
		s.rep.Mismatched++
	}
	delete(s.pending, m.Seq)
	s.rep.Answered++
	sess.Echoed++
}
