package ticketkeys

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseFile(t *testing.T) {
	key := func(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, SecretSize)) }
	tests := []struct {
		name    string
		text    string
		mode    os.FileMode
		want    []byte // first byte of each key, in order
		wantErr string
	}{
		{name: "one key", text: key(1) + "\n", mode: 0o600, want: []byte{1}},
		{name: "current first, comments and blank lines", text: "# rotated 2026-11-01\n\n" + key(3) + "\n  " + key(2) + "  \n" + key(1), mode: 0o400, want: []byte{3, 2, 1}},
		{name: "readable by group", text: key(1), mode: 0o640, wantErr: "mode 0640"},
		{name: "readable by others", text: key(1), mode: 0o604, wantErr: "mode 0604"},
		{name: "no key", text: "# none yet\n\n", mode: 0o600, wantErr: "has no key"},
		{name: "short key", text: base64.StdEncoding.EncodeToString(make([]byte, 16)), mode: 0o600, wantErr: "line 1: want the base64 of 32 bytes"},
		{name: "long key", text: key(1) + "\n" + base64.StdEncoding.EncodeToString(make([]byte, 48)), mode: 0o600, wantErr: "line 2: want the base64 of 32 bytes"},
		{name: "not base64", text: key(1) + "\n\nthis is not a key!\n", mode: 0o600, wantErr: "line 3:"},
		{name: "a key twice", text: key(1) + "\n" + key(1), mode: 0o600, wantErr: "line 2: a key given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys")
			if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			r, err := ParseFile(path, t0)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrBadFile) {
					t.Fatalf("ParseFile = %v; want ErrBadFile with %q", err, tt.wantErr)
				}
				// The refusal never quotes the file's text.
				if strings.Contains(err.Error(), "not a key") || strings.Contains(err.Error(), key(1)[:8]) {
					t.Errorf("the error quotes the file: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFile: %v", err)
			}
			var got []byte
			for i, k := range r.Keys {
				got = append(got, k.Secret[0])
				if i > 0 && !k.Created.Before(r.Keys[i-1].Created) {
					t.Errorf("key %d not older than key %d: the order would not survive a Merge", i+1, i)
				}
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("keys %v; want %v", got, tt.want)
			}
			if !r.Keys[0].Created.Equal(t0) {
				t.Errorf("current key created %v; want the read time", r.Keys[0].Created)
			}
		})
	}
	if _, err := ParseFile(filepath.Join(t.TempDir(), "missing"), t0); !errors.Is(err, ErrBadFile) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v; want ErrBadFile and ErrNotExist", err)
	}
	if _, err := ParseFile(t.TempDir(), t0); !errors.Is(err, ErrBadFile) {
		t.Errorf("a directory: %v; want ErrBadFile", err)
	}
}
