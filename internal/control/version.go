package control

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is the newest protocol version, the one a hello says first;
// MinVersion is the oldest one a peer still speaks. See the package
// documentation for what changed and how peers of different versions
// agree.
const (
	Version    = 2
	MinVersion = 1
)

// Accepts reports whether a hello of version v is accepted: this package
// speaks every version from MinVersion to Version.
func Accepts(v int) bool { return v >= MinVersion && v <= Version }

// refusalPrefix starts the error of a Refusal; version-1 supervisors wrote
// it too, and workers of later versions parse it, so it must not change.
const refusalPrefix = "protocol: want hello version "

// Refusal is the answer to a hello whose version is not accepted: a
// Result naming want, the newest version the refusing side speaks. The
// refusing side then closes the connection.
func Refusal(want int) Message {
	return Message{Type: TypeResult, Error: refusalPrefix + strconv.Itoa(want)}
}

// Fallback returns the version to say hello at again after answer refused
// a hello at version sent: the older version the Refusal names, when this
// package still speaks it. It reports false for any other answer.
func Fallback(answer Message, sent int) (int, bool) {
	if answer.Type != TypeResult {
		return 0, false
	}
	s, ok := strings.CutPrefix(answer.Error, refusalPrefix)
	if !ok {
		return 0, false
	}
	want, err := strconv.Atoi(s)
	if err != nil || want >= sent || !Accepts(want) {
		return 0, false
	}
	return want, true
}

// Negotiate says hello through say, which sends its argument on a new
// connection and returns the answer (closing that connection itself when
// the answer is not a Welcome). It sends hello as given first (normally at
// Version) and, when the answer is a Refusal naming an older version this
// package speaks, once more at that version. It returns the last answer,
// which the caller checks: a Welcome or a refusal it cannot get past.
func Negotiate(hello Message, say func(Message) (Message, error)) (Message, error) {
	m, err := say(hello)
	if err != nil {
		return m, err
	}
	if v, ok := Fallback(m, hello.Version); ok {
		hello.Version = v
		m, err = say(hello)
		if err != nil {
			return m, fmt.Errorf("at version %d: %w", v, err)
		}
	}
	return m, nil
}
