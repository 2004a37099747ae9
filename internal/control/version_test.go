package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
)

func TestAccepts(t *testing.T) {
	tests := []struct {
		v    int
		want bool
	}{
		{0, false}, // a hello without a version
		{1, true},  // workers and clients built before IDs
		{2, true},
		{3, false},
		{-1, false},
	}
	for _, tt := range tests {
		if got := Accepts(tt.v); got != tt.want {
			t.Errorf("Accepts(%d) = %v; want %v", tt.v, got, tt.want)
		}
	}
	if Version != 2 || MinVersion != 1 {
		t.Errorf("Version, MinVersion = %d, %d; want 2, 1", Version, MinVersion)
	}
}

// TestRefusalIsVersion1s: a refusal reads exactly as a version-1
// supervisor's, which workers of every later version parse.
func TestRefusalIsVersion1s(t *testing.T) {
	got := Refusal(1)
	want := Message{Type: TypeResult, Error: "protocol: want hello version 1"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v; want %+v", got, want)
	}
}

func TestFallback(t *testing.T) {
	tests := []struct {
		name   string
		answer Message
		sent   int
		want   int
		wantOK bool
	}{
		{"v1 supervisor refuses v2", Refusal(1), 2, 1, true},
		{"v1 supervisor, literal", Message{Type: TypeResult, Error: "protocol: want hello version 1"}, 2, 1, true},
		{"welcome", Message{Type: TypeWelcome, Version: 2}, 2, 0, false},
		{"refused for another reason", Message{Type: TypeResult, Error: "unknown worker"}, 2, 0, false},
		{"wants the version sent", Refusal(2), 2, 0, false},
		{"wants a newer one", Refusal(3), 2, 0, false},
		{"wants one no longer spoken", Refusal(0), 2, 0, false},
		{"garbled number", Message{Type: TypeResult, Error: "protocol: want hello version 1x"}, 2, 0, false},
		{"not a result", Message{Type: TypeProgress, Error: "protocol: want hello version 1"}, 2, 0, false},
		{"v3 worker of the future to us", Refusal(Version), 3, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Fallback(tt.answer, tt.sent)
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("got %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// TestNegotiate: a hello refused by an older peer is said once more at the
// version it names, and only then; the answer is the caller's to judge.
func TestNegotiate(t *testing.T) {
	errDial := errors.New("dial failed")
	// peer answers like a supervisor speaking versions lo…hi.
	peer := func(lo, hi int) func(Message) (Message, error) {
		return func(m Message) (Message, error) {
			if m.Version < lo || m.Version > hi {
				return Refusal(hi), nil
			}
			return Message{Type: TypeWelcome, Version: m.Version}, nil
		}
	}
	tests := []struct {
		name       string
		say        func(Message) (Message, error)
		wantHellos []int
		want       Message
		wantErr    error
	}{
		{"v2 peer", peer(1, 2), []int{2}, Message{Type: TypeWelcome, Version: 2}, nil},
		{"v1 peer", peer(1, 1), []int{2, 1}, Message{Type: TypeWelcome, Version: 1}, nil},
		{"peer of the future", peer(2, 3), []int{2}, Message{Type: TypeWelcome, Version: 2}, nil},
		{"peer too new", peer(3, 3), []int{2}, Refusal(3), nil},
		{"unknown worker", func(Message) (Message, error) {
			return Message{Type: TypeResult, Error: "unknown worker"}, nil
		}, []int{2}, Message{Type: TypeResult, Error: "unknown worker"}, nil},
		{"dial fails", func(Message) (Message, error) { return Message{}, errDial }, []int{2}, Message{}, errDial},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hellos []int
			got, err := Negotiate(Message{Type: TypeHello, Version: Version, Role: RoleWorker, Token: "t"}, func(m Message) (Message, error) {
				if m.Token != "t" || m.Role != RoleWorker {
					t.Errorf("hello %+v lost its fields", m)
				}
				hellos = append(hellos, m.Version)
				return tt.say(m)
			})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v; want %v", err, tt.wantErr)
			}
			if fmt.Sprint(hellos) != fmt.Sprint(tt.wantHellos) {
				t.Errorf("hellos at versions %v; want %v", hellos, tt.wantHellos)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

// TestIDRoundTrip: IDs survive the wire, and a message without one (a
// version-1 peer's) encodes without the field.
func TestIDRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Message
	}{
		{"v2 quiesce", `{"type":"quiesce","id":7,"settle_ms":50}` + "\n", Message{Type: TypeQuiesce, ID: 7, SettleMS: 50}},
		{"v2 reply", `{"type":"steered","id":18446744073709551615}` + "\n", Message{Type: TypeSteered, ID: 1<<64 - 1}},
		{"v1 reply", `{"type":"released"}` + "\n", Message{Type: TypeReleased}},
		{"v2 hello", `{"type":"hello","v":2,"role":"worker","token":"t","caps":["quiesce"]}` + "\n",
			Message{Type: TypeHello, Version: 2, Role: RoleWorker, Token: "t", Caps: []string{CapQuiesce}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v; want %+v", got, tt.want)
			}
		})
	}
	if _, err := Decode([]byte(`{"type":"steered","id":-1}` + "\n")); err == nil {
		t.Errorf("a negative ID decoded; want an error")
	}
	// A version-1 supervisor sees no new field from a version-2 worker
	// that got no ID to echo.
	b, err := json.Marshal(Message{Type: TypeReleased})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"type":"released"}`; got != want {
		t.Errorf("got %s; want %s", got, want)
	}
}
