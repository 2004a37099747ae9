package ticketkeys

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/launcherd/launcher/internal/control"
)

// Defaults of the schedule: those of crypto/tls's own automatic keys
// (ticketKeyRotation and ticketKeyLifetime in crypto/tls/common.go).
const (
	DefaultRotate   = 24 * time.Hour
	DefaultLifetime = 7 * 24 * time.Hour
)

// MaxKeys bounds a ring: keys beyond it, the oldest, are dropped. At the
// default schedule a ring holds 7 or 8 keys; 64 keeps a control message
// small (about 4 KiB) whatever the flags.
const MaxKeys = 64

// SecretSize is the size of a key, as [crypto/tls.Config.SetSessionTicketKeys]
// takes it.
const SecretSize = 32

// Key is one session-ticket key and when it was made (or, for an
// operator's key, read).
type Key struct {
	Secret  [SecretSize]byte
	Created time.Time
}

// Ring is the ticket keys in use, newest first: the first encrypts new
// tickets, all decrypt. Its zero value has no key.
type Ring struct {
	Keys []Key
}

// Len returns the number of keys.
func (r Ring) Len() int { return len(r.Keys) }

// Current returns the key new tickets are encrypted with; false if the
// ring is empty.
func (r Ring) Current() (Key, bool) {
	if len(r.Keys) == 0 {
		return Key{}, false
	}
	return r.Keys[0], true
}

// NewKey returns a key of random bytes read from rnd (crypto/rand.Reader
// in production), created at now.
func NewKey(now time.Time, rnd io.Reader) (Key, error) {
	k := Key{Created: now}
	if _, err := io.ReadFull(rnd, k.Secret[:]); err != nil {
		return Key{}, fmt.Errorf("ticket key: %w", err)
	}
	return k, nil
}

// Rotate returns the ring as it should be at now: with a new current key
// (from rnd) when the ring is empty or its current key is every old or
// older, and without the keys lifetime old or older (the current one is
// never dropped), at most MaxKeys. changed says whether it differs from r.
func (r Ring) Rotate(now time.Time, every, lifetime time.Duration, rnd io.Reader) (out Ring, changed bool, err error) {
	keys := slices.Clone(r.Keys)
	if len(keys) == 0 || now.Sub(keys[0].Created) >= every {
		k, err := NewKey(now, rnd)
		if err != nil {
			return r, false, err
		}
		keys = append([]Key{k}, keys...)
	}
	kept := keys[:1]
	for _, k := range keys[1:] {
		if now.Sub(k.Created) < lifetime && len(kept) < MaxKeys {
			kept = append(kept, k)
		}
	}
	out = Ring{Keys: kept}
	return out, !out.Equal(r), nil
}

// NextRotation returns when the current key is every old: the time
// Rotate makes a new one. The zero time if the ring is empty.
func (r Ring) NextRotation(every time.Duration) time.Time {
	k, ok := r.Current()
	if !ok {
		return time.Time{}
	}
	return k.Created.Add(every)
}

// Merge returns the keys of r and o, each once, newest first (a key in
// both keeps its older creation time), at most MaxKeys. An adopting
// supervisor merges the rings its workers bring back: one that missed a
// rotation while disconnected has an older ring than the others.
func Merge(r, o Ring) Ring {
	var keys []Key
	for _, k := range append(slices.Clone(r.Keys), o.Keys...) {
		i := slices.IndexFunc(keys, func(x Key) bool { return x.Secret == k.Secret })
		switch {
		case i < 0:
			keys = append(keys, k)
		case k.Created.Before(keys[i].Created):
			keys[i].Created = k.Created
		}
	}
	slices.SortStableFunc(keys, func(a, b Key) int { return b.Created.Compare(a.Created) })
	if len(keys) > MaxKeys {
		keys = keys[:MaxKeys]
	}
	return Ring{Keys: keys}
}

// Equal reports whether r and o hold the same keys in the same order,
// created at the same times.
func (r Ring) Equal(o Ring) bool {
	return slices.EqualFunc(r.Keys, o.Keys, func(a, b Key) bool {
		return a.Secret == b.Secret && a.Created.Equal(b.Created)
	})
}

// Secrets returns the keys as SetSessionTicketKeys takes them, current
// first.
func (r Ring) Secrets() [][SecretSize]byte {
	out := make([][SecretSize]byte, len(r.Keys))
	for i, k := range r.Keys {
		out[i] = k.Secret
	}
	return out
}

// Wire returns the ring as the control protocol carries it.
func (r Ring) Wire() []control.TicketKey {
	out := make([]control.TicketKey, len(r.Keys))
	for i, k := range r.Keys {
		out[i] = control.TicketKey{Secret: bytes.Clone(k.Secret[:]), Created: k.Created.Unix()}
	}
	return out
}

// FromWire returns the ring a control message carries. It refuses a key
// that is not SecretSize bytes, and more than MaxKeys keys.
func FromWire(keys []control.TicketKey) (Ring, error) {
	if len(keys) > MaxKeys {
		return Ring{}, fmt.Errorf("ticket keys: %d keys, want at most %d", len(keys), MaxKeys)
	}
	r := Ring{Keys: make([]Key, len(keys))}
	for i, k := range keys {
		if len(k.Secret) != SecretSize {
			return Ring{}, fmt.Errorf("ticket key %d: %d bytes, want %d", i+1, len(k.Secret), SecretSize)
		}
		copy(r.Keys[i].Secret[:], k.Secret)
		r.Keys[i].Created = time.Unix(k.Created, 0)
	}
	return r, nil
}
