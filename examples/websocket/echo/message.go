package echo

// Message is the JSON of every text frame. A client sends Seq (1, 2, …)
// and Data; the server echoes both with its Generation, Version and PID.
// The server's first frame on a connection is a hello: Seq 0, no Data, so
// that a client knows which generation it reached before any echo.
type Message struct {
	Seq        uint64 `json:"seq"`
	Data       string `json:"data,omitempty"`
	Generation int    `json:"generation,omitempty"`
	Version    string `json:"version,omitempty"`
	PID        int    `json:"pid,omitempty"`
}

// GoingAway is the close reason sent with status 1001 when a generation
// drains.
const GoingAway = "going away"
