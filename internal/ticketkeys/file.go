package ticketkeys

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"time"
)

// ErrBadFile is wrapped by every refusal of ParseFile.
var ErrBadFile = errors.New("bad ticket key file")

// maxFileSize bounds a key file: MaxKeys lines and comments fit easily.
const maxFileSize = 64 << 10

// ParseFile reads an operator's key file: one key a line, the standard
// base64 encoding (RFC 4648 section 4, padded) of SecretSize random
// bytes (`head -c 32 /dev/urandom | base64`), the first line the current
// key; empty lines and lines starting with # are skipped. It refuses a
// file that group or others may read or write (mode & 0o077; keep it 0600
// or 0400, like an ssh key), one without a key, with more than MaxKeys, a
// key given twice, and any other line; errors name the line, never its
// text. The keys are created at now: the operator rotates them, by
// editing the file.
func ParseFile(path string, now time.Time) (Ring, error) {
	f, err := os.Open(path)
	if err != nil {
		return Ring{}, fmt.Errorf("%w: %w", ErrBadFile, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Ring{}, fmt.Errorf("%w: %w", ErrBadFile, err)
	}
	if !fi.Mode().IsRegular() {
		return Ring{}, fmt.Errorf("%w: %s is not a regular file", ErrBadFile, path)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return Ring{}, fmt.Errorf("%w: %s has mode %04o: group and others must have no access (chmod 600 %s)", ErrBadFile, path, m, path)
	}
	if fi.Size() > maxFileSize {
		return Ring{}, fmt.Errorf("%w: %s is over %d bytes", ErrBadFile, path, maxFileSize)
	}
	var r Ring
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		var k Key
		buf := make([]byte, base64.StdEncoding.DecodedLen(len(line)))
		got, err := base64.StdEncoding.Decode(buf, line)
		if err != nil || got != SecretSize {
			return Ring{}, fmt.Errorf("%w: %s line %d: want the base64 of %d bytes", ErrBadFile, path, n, SecretSize)
		}
		copy(k.Secret[:], buf)
		clear(buf)
		for _, o := range r.Keys {
			if o.Secret == k.Secret {
				return Ring{}, fmt.Errorf("%w: %s line %d: a key given twice", ErrBadFile, path, n)
			}
		}
		if len(r.Keys) == MaxKeys {
			return Ring{}, fmt.Errorf("%w: %s: more than %d keys", ErrBadFile, path, MaxKeys)
		}
		// Each a second older than the one above, so that the order
		// survives a Merge or a trip over the wire.
		k.Created = now.Add(-time.Duration(len(r.Keys)) * time.Second)
		r.Keys = append(r.Keys, k)
	}
	if err := sc.Err(); err != nil {
		return Ring{}, fmt.Errorf("%w: %s: %w", ErrBadFile, path, err)
	}
	if len(r.Keys) == 0 {
		return Ring{}, fmt.Errorf("%w: %s has no key", ErrBadFile, path)
	}
	return r, nil
}
