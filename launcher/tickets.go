package launcher

import (
	"crypto/rand"
	"crypto/tls"
	"time"

	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/internal/ticketkeys"
)

// TLS session-ticket keys. crypto/tls makes its own in each process, so
// a ticket one generation issued would be useless to the next: every
// returning client would pay a full handshake after each upgrade. Under a
// supervisor the keys are its own ring, handed over the control connection
// at join and on every rotation (control.TypeTicketKeys); a standalone
// process makes a ring at start and hands it to the process it starts on
// SIGHUP. Either way they are applied with SetSessionTicketKeys to every
// config registered with shareTicketKeys, Options.TLS among them.

// shareTicketKeys makes cfg use the App's session-ticket keys, now and
// after every change. http.Server.ServeTLS serves a clone of its
// TLSConfig, and a clone's keys are copied once: so unless the app set its
// own, cfg's WrapSession and UnwrapSession are set to encrypt and decrypt
// tickets with cfg's keys (EncryptTicket, DecryptTicket), which every
// clone then shares. Call it before cfg is served or cloned.
func (a *App) shareTicketKeys(cfg *tls.Config) {
	if cfg == nil {
		return
	}
	if cfg.WrapSession == nil && cfg.UnwrapSession == nil {
		cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
			return cfg.EncryptTicket(cs, ss)
		}
		cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
			return cfg.DecryptTicket(identity, cs)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.ticketCfgs {
		if c == cfg {
			return
		}
	}
	a.ticketCfgs = append(a.ticketCfgs, cfg)
	if a.tickets.Len() > 0 {
		cfg.SetSessionTicketKeys(a.tickets.Secrets())
	}
}

// setTicketKeys makes r the App's ticket keys and applies them to every
// registered config. SetSessionTicketKeys takes each config's own lock,
// briefly; no I/O happens under a.mu.
func (a *App) setTicketKeys(r ticketkeys.Ring) {
	if r.Len() == 0 {
		return // SetSessionTicketKeys panics on none
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tickets = r
	for _, cfg := range a.ticketCfgs {
		cfg.SetSessionTicketKeys(r.Secrets())
	}
}

// receiveTicketKeys applies the keys of a control.TypeTicketKeys message.
func (a *App) receiveTicketKeys(m control.Message) {
	r, err := ticketkeys.FromWire(m.TicketKeys)
	if err != nil {
		a.log.Warn("ignoring TLS session-ticket keys", "err", err)
		return
	}
	a.setTicketKeys(r)
	a.log.Debug("TLS session-ticket keys received", "keys", r.Len())
}

// makeTicketKeys gives a standalone App a ring of its own, unless it has
// one (from the parent that handed over to it). Without a supervisor it
// is rotated on crypto/tls's schedule at each handover (see
// handoffTicketKeys), not in between.
func (a *App) makeTicketKeys() {
	a.mu.Lock()
	have := a.tickets.Len() > 0
	a.mu.Unlock()
	if have {
		return
	}
	r, _, err := ticketkeys.Ring{}.Rotate(time.Now(), ticketkeys.DefaultRotate, ticketkeys.DefaultLifetime, rand.Reader)
	if err != nil {
		a.log.Warn("TLS session-ticket keys: crypto/tls keeps its own", "err", err)
		return
	}
	a.setTicketKeys(r)
}

// handoffTicketKeys returns the keys to hand to the process a standalone
// SIGHUP starts: the App's ring, rotated if its current key is due.
// Without a supervisor nothing else rotates them.
func (a *App) handoffTicketKeys() []control.TicketKey {
	a.mu.Lock()
	r := a.tickets
	a.mu.Unlock()
	if r.Len() == 0 {
		return nil
	}
	if rot, _, err := r.Rotate(time.Now(), ticketkeys.DefaultRotate, ticketkeys.DefaultLifetime, rand.Reader); err == nil {
		r = rot
	}
	return r.Wire()
}
