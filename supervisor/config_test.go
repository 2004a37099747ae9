package supervisor

import (
	"strings"
	"testing"
)

func TestCheckListen(t *testing.T) {
	tests := []struct {
		addr string
		want string // "" means accepted
	}{
		{"127.0.0.1:8080", ""},
		{":8080", ""},
		{"[::1]:8080", ""},
		{"localhost:8080", ""},
		{"app.internal.example:443", ""},
		{"127.0.0.1", "missing port"},
		{"127.0.0.1:80800", "want a number from 1 to 65535"},
		{"127.0.0.1:0", "want a number from 1 to 65535"},
		{"127.0.0.1:http", "want a number from 1 to 65535"},
		{"256.1.1.1:8080", "neither an IP address nor a host name"},
		{"bad_host!:8080", "neither an IP address nor a host name"},
	}
	for _, tt := range tests {
		err := checkListen(tt.addr)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("checkListen(%q) = %v; want nil", tt.addr, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("checkListen(%q) = %v; want an error with %q", tt.addr, err, tt.want)
		}
	}
}

func TestConfigRefusesTwiceTheSameListen(t *testing.T) {
	c := Config{Command: []string{"/bin/true"}, Listen: []string{"127.0.0.1:8080", "127.0.0.1:8080"}, StateDir: "/tmp/x"}
	if err := c.check(); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("check = %v; want refused", err)
	}
}
