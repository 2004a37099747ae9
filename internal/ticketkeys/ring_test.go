package ticketkeys

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/control"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// created returns the keys' ages at now, newest first.
func ages(r Ring, now time.Time) []time.Duration {
	var out []time.Duration
	for _, k := range r.Keys {
		out = append(out, now.Sub(k.Created))
	}
	return out
}

func TestRotateSchedule(t *testing.T) {
	const every, lifetime = 24 * time.Hour, 7 * 24 * time.Hour
	var r Ring
	r, changed, err := r.Rotate(t0, every, lifetime, rand.Reader)
	if err != nil || !changed || r.Len() != 1 {
		t.Fatalf("first Rotate = %d keys, changed %v, %v; want 1 key, changed", r.Len(), changed, err)
	}
	first := r.Keys[0]
	if _, changed, _ := r.Rotate(t0.Add(every-time.Second), every, lifetime, rand.Reader); changed {
		t.Errorf("Rotate before the current key is %s old changed the ring", every)
	}
	// Every day for 10 days: a new key each time, and never more than the
	// keys younger than the lifetime (7 days: today's and 7 older at the
	// moment of the rotation, the 8th dropped).
	now := t0
	for day := 1; day <= 10; day++ {
		now = now.Add(every)
		var changed bool
		r, changed, err = r.Rotate(now, every, lifetime, rand.Reader)
		if err != nil || !changed {
			t.Fatalf("day %d: changed %v, %v", day, changed, err)
		}
		if r.Keys[0].Created != now {
			t.Errorf("day %d: current key created %v; want now", day, r.Keys[0].Created)
		}
		want := min(day+1, 7)
		if r.Len() != want {
			t.Errorf("day %d: %d keys (ages %v); want %d", day, r.Len(), ages(r, now), want)
		}
		for _, a := range ages(r, now) {
			if a >= lifetime {
				t.Errorf("day %d: a key %s old is kept; lifetime %s", day, a, lifetime)
			}
		}
	}
	for _, k := range r.Keys {
		if k.Secret == first.Secret {
			t.Errorf("the first key is still there after 10 days")
		}
	}
	// Secrets are distinct.
	seen := map[[SecretSize]byte]bool{}
	for _, k := range r.Keys {
		if seen[k.Secret] {
			t.Fatalf("a secret twice")
		}
		seen[k.Secret] = true
	}
}

func TestRotateKeepsCurrentAndBounds(t *testing.T) {
	// A lifetime equal to the period: only the new key survives a rotation.
	r, _, _ := Ring{}.Rotate(t0, time.Hour, time.Hour, rand.Reader)
	r, _, _ = r.Rotate(t0.Add(time.Hour), time.Hour, time.Hour, rand.Reader)
	if r.Len() != 1 {
		t.Errorf("lifetime = period: %d keys; want 1", r.Len())
	}
	// A tiny period and a long lifetime: at most MaxKeys.
	r, now := Ring{}, t0
	for range 3 * MaxKeys {
		now = now.Add(time.Second)
		r, _, _ = r.Rotate(now, time.Second, 24*time.Hour, rand.Reader)
	}
	if r.Len() != MaxKeys {
		t.Errorf("%d keys after %d rotations; want MaxKeys = %d", r.Len(), 3*MaxKeys, MaxKeys)
	}
	// A failing source of randomness changes nothing.
	before := r
	got, changed, err := r.Rotate(now.Add(time.Hour), time.Second, 24*time.Hour, bytes.NewReader(nil))
	if err == nil || changed || !got.Equal(before) {
		t.Errorf("Rotate with no randomness: changed %v, %v; want an error and the ring unchanged", changed, err)
	}
}

func TestNextRotation(t *testing.T) {
	if got := (Ring{}).NextRotation(time.Hour); !got.IsZero() {
		t.Errorf("empty ring: NextRotation = %v; want zero", got)
	}
	r := Ring{Keys: []Key{{Created: t0}, {Created: t0.Add(-30 * time.Hour)}}}
	if got, want := r.NextRotation(24*time.Hour), t0.Add(24*time.Hour); !got.Equal(want) {
		t.Errorf("NextRotation = %v; want %v", got, want)
	}
}

func TestMerge(t *testing.T) {
	k := func(b byte, created time.Time) Key {
		var s [SecretSize]byte
		s[0] = b
		return Key{Secret: s, Created: created}
	}
	tests := []struct {
		name string
		a, b Ring
		want Ring
	}{
		{"empty", Ring{}, Ring{}, Ring{}},
		{"into empty", Ring{}, Ring{Keys: []Key{k(1, t0), k(2, t0.Add(-time.Hour))}},
			Ring{Keys: []Key{k(1, t0), k(2, t0.Add(-time.Hour))}}},
		{"same ring", Ring{Keys: []Key{k(1, t0)}}, Ring{Keys: []Key{k(1, t0)}}, Ring{Keys: []Key{k(1, t0)}}},
		{"one missed a rotation", Ring{Keys: []Key{k(2, t0.Add(-time.Hour))}}, Ring{Keys: []Key{k(1, t0), k(2, t0.Add(-time.Hour))}},
			Ring{Keys: []Key{k(1, t0), k(2, t0.Add(-time.Hour))}}},
		{"a key in both keeps its older time", Ring{Keys: []Key{k(1, t0)}}, Ring{Keys: []Key{k(1, t0.Add(-time.Minute))}},
			Ring{Keys: []Key{k(1, t0.Add(-time.Minute))}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Merge(tt.a, tt.b); !got.Equal(tt.want) {
				t.Errorf("Merge = %v; want %v", ages(got, t0), ages(tt.want, t0))
			}
		})
	}
}

func TestWireRoundTrip(t *testing.T) {
	r, _, _ := Ring{}.Rotate(t0, time.Hour, 2*time.Hour, rand.Reader)
	r, _, _ = r.Rotate(t0.Add(time.Hour), time.Hour, 2*time.Hour, rand.Reader)
	got, err := FromWire(r.Wire())
	if err != nil || !got.Equal(r) {
		t.Fatalf("FromWire(Wire) = %v, %v; want the same ring", ages(got, t0), err)
	}
	w := r.Wire()
	w[1].Secret = w[1].Secret[:31]
	if _, err := FromWire(w); err == nil {
		t.Errorf("FromWire accepted a 31-byte key")
	}
}

// TestWireFromJSON: the keys of a control message decoded from JSON (the
// secret in base64) make a ring; a message of a wrong size is refused.
func TestWireFromJSON(t *testing.T) {
	m, err := control.Decode([]byte(`{"type":"ticket-keys","ticket_keys":[{"secret":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","created":1764460800}]}` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := FromWire(m.TicketKeys)
	if err != nil || r.Len() != 1 || r.Keys[0].Secret[31] != 31 || r.Keys[0].Created.Unix() != 1764460800 {
		t.Fatalf("FromWire = %d keys, %v", r.Len(), err)
	}
	m.TicketKeys = append(m.TicketKeys, control.TicketKey{Secret: []byte("short")})
	if _, err := FromWire(m.TicketKeys); err == nil {
		t.Errorf("FromWire accepted a 5-byte key")
	}
}
