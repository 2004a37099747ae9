package loadgen

import (
	"time"
)

// Record is one request as stored by Run, decoded.
type Record struct {
	// Start is when the request started (before dialing, if it dialed),
	// relative to Result.Start, at microsecond resolution.
	Start time.Duration
	// Latency is from Start to the end of the response body, or to the
	// failure. Microsecond resolution below about 8.4 s, millisecond above.
	Latency time.Duration
	// Class is the outcome.
	Class Class
	// Version is X from a 2xx body "hello from X": "" when there was
	// none, OverflowVersion when the worker had already seen
	// maxVersions other versions.
	Version string
}

// OverflowVersion stands for the versions a worker saw after its first
// maxVersions distinct ones (a misbehaving service); it bounds memory.
const OverflowVersion = "(other)"

// A record packs into a uint64:
//
//	bits  0-31  start offset in µs since Result.Start (up to 71 min)
//	bits 32-55  latency: bit 55 clear: µs (< 2^23 µs, about 8.4 s);
//	            bit 55 set: ms in bits 32-54
//	bits 56-58  class
//	bits 59-63  version index: 0 none, 1..maxVersions, overflowIndex
const (
	latBits       = 24
	latMsFlag     = 1 << (latBits - 1)
	latMask       = 1<<latBits - 1
	maxVersions   = 30
	overflowIndex = maxVersions + 1
	maxOffsetUs   = 1<<32 - 1
)

func encodeRecord(start, latency time.Duration, c Class, version uint8) uint64 {
	s := max(start.Microseconds(), 0)
	s = min(s, maxOffsetUs)
	var lat uint64
	if us := max(latency.Microseconds(), 0); us < latMsFlag {
		lat = uint64(us)
	} else {
		ms := min(latency.Milliseconds(), latMsFlag-1)
		lat = latMsFlag | uint64(ms)
	}
	return uint64(s) | lat<<32 | uint64(c&7)<<56 | uint64(version&31)<<59
}

// decode returns the fields of a packed record; v is the version index.
func decode(r uint64) (start, latency time.Duration, c Class, v uint8) {
	start = time.Duration(r&maxOffsetUs) * time.Microsecond
	lat := r >> 32 & latMask
	if lat&latMsFlag != 0 {
		latency = time.Duration(lat&^latMsFlag) * time.Millisecond
	} else {
		latency = time.Duration(lat) * time.Microsecond
	}
	return start, latency, Class(r >> 56 & 7), uint8(r >> 59)
}

// withVersion returns r with its version index replaced.
func withVersion(r uint64, v uint8) uint64 {
	return r&^(31<<59) | uint64(v&31)<<59
}

// recordLog is an append-only list of packed records, grown in chunks so
// that a long run never copies what it already stored.
type recordLog struct {
	chunks [][]uint64
	n      int
}

const (
	firstChunk = 1 << 10
	maxChunk   = 1 << 16
)

func (l *recordLog) add(r uint64) {
	k := len(l.chunks)
	if k == 0 || len(l.chunks[k-1]) == cap(l.chunks[k-1]) {
		size := min(max(firstChunk, l.n), maxChunk)
		l.chunks = append(l.chunks, make([]uint64, 0, size))
		k++
	}
	l.chunks[k-1] = append(l.chunks[k-1], r)
	l.n++
}

// versionTable gives small indexes to the versions one worker has seen.
type versionTable struct {
	names []string // names[i-1] is index i
	index map[string]uint8
}

// lookup returns the index of version b, adding it if there is room.
// The map lookup with string(b) does not allocate.
func (t *versionTable) lookup(b []byte) uint8 {
	if len(b) == 0 {
		return 0
	}
	if i, ok := t.index[string(b)]; ok {
		return i
	}
	if len(t.names) == maxVersions {
		return overflowIndex
	}
	if t.index == nil {
		t.index = make(map[string]uint8)
	}
	name := string(b)
	t.names = append(t.names, name)
	i := uint8(len(t.names))
	t.index[name] = i
	return i
}

// name returns the version name of index i.
func (t *versionTable) name(i uint8) string {
	switch {
	case i == 0:
		return ""
	case i == overflowIndex || int(i) > len(t.names):
		return OverflowVersion
	}
	return t.names[i-1]
}
