package supervisor

import (
	"crypto/rand"
	"slices"
	"time"

	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/internal/ticketkeys"
)

// tickets is the TLS session-ticket key ring the supervisor hands every
// worker, so that a client resumes on whichever generation it reaches. It
// belongs to the loop. Its keys are made in memory (crypto/rand), or read
// from the operator's file, and leave the supervisor only over the control
// socket: never in argv, the environment, a log line or the state file. An
// adopting supervisor takes the ring back from the workers that rejoin
// (their hello carries it), so that it survives the supervisor too.
type tickets struct {
	ring      ticketkeys.Ring
	fixed     bool   // the operator's file: never rotated, nor merged
	stopTimer func() // the next rotation; nil when none is due
}

// ticketsJoin hands the ring to w, which just said hello, if its library
// applies it. A rejoining worker brings the ring of the supervisor it
// lost, which is merged in: while an adoption waits for its workers, each
// keeps serving with its own keys, and all get the merged ring when it
// ends (finishAdoption), so that a worker that missed a rotation, were it
// first to rejoin, does not make the ring look due for one; after that,
// at once.
func (l *loop) ticketsJoin(w *worker, hello control.Message) {
	if !w.can(control.CapTicketKeys) {
		return
	}
	t := &l.tickets
	if hello.Rejoin && !t.fixed && len(hello.TicketKeys) > 0 {
		r, err := ticketkeys.FromWire(hello.TicketKeys)
		if err != nil {
			l.workerLog(w).Warn("rejoin: ignoring the TLS ticket keys it brought", "err", err)
		} else if merged := ticketkeys.Merge(t.ring, r); !merged.Equal(t.ring) {
			t.ring = merged
			if l.adopting == nil {
				l.refreshTickets("taken over from a rejoining worker", true)
			}
			return
		}
	}
	if hello.Rejoin && l.adopting != nil {
		return // finishAdoption hands the ring over
	}
	if t.ring.Len() == 0 {
		l.refreshTickets("made", true)
		return
	}
	l.send(w, l.ticketMessage())
}

// refreshTickets rotates the ring if a rotation or an expiry is due,
// hands it to every connected worker if it changed (or changed is already
// true), and schedules the next rotation.
func (l *loop) refreshTickets(why string, changed bool) {
	t := &l.tickets
	if !t.fixed {
		r, rotated, err := t.ring.Rotate(time.Now(), l.cfg.TicketRotate, l.cfg.TicketLifetime, rand.Reader)
		if err != nil {
			l.log.Error("TLS ticket keys: rotate", "err", err)
		} else if rotated {
			t.ring, changed = r, true
		}
		l.scheduleTicketRotation()
	}
	l.ticketMetrics()
	if !changed {
		return
	}
	cur, _ := t.ring.Current()
	// The count and the age only: key material is never logged.
	l.log.Info("TLS session-ticket keys "+why, "keys", t.ring.Len(), "current_created", cur.Created.UTC().Format(time.RFC3339))
	m := l.ticketMessage()
	for _, w := range l.byToken {
		if w.conn != nil && !w.exited && w.can(control.CapTicketKeys) {
			l.send(w, m)
		}
	}
}

// scheduleTicketRotation sets the timer of the next rotation. Expired
// keys are dropped then, as crypto/tls drops its own: a key is kept
// until the first rotation at which it is TicketLifetime old, exactly
// that long when the lifetime is a multiple of the period (7 days of
// 24 h by default).
func (l *loop) scheduleTicketRotation() {
	t := &l.tickets
	if t.stopTimer != nil {
		t.stopTimer()
		t.stopTimer = nil
	}
	next := t.ring.NextRotation(l.cfg.TicketRotate)
	if next.IsZero() {
		return
	}
	t.stopTimer = l.after(max(time.Until(next), 0), evFunc(func(l *loop) {
		l.tickets.stopTimer = nil
		l.refreshTickets("rotated", false)
	}))
}

// setTicketFile replaces the ring with the operator's keys read again
// (at an upgrade), if they changed.
func (l *loop) setTicketFile(r ticketkeys.Ring) {
	t := &l.tickets
	if slices.Equal(r.Secrets(), t.ring.Secrets()) {
		return
	}
	t.ring = r
	l.refreshTickets("read again from --tls-ticket-key-file", true)
}

func (l *loop) ticketMessage() control.Message {
	return control.Message{Type: control.TypeTicketKeys, TicketKeys: l.tickets.ring.Wire()}
}

func (l *loop) ticketMetrics() {
	if l.m == nil {
		return
	}
	l.m.TicketKeys.Set(float64(l.tickets.ring.Len()))
	created := 0.0
	if cur, ok := l.tickets.ring.Current(); ok {
		created = float64(cur.Created.Unix())
	}
	l.m.TicketKeyCreated.Set(created)
}
