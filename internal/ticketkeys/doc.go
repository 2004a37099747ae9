// Package ticketkeys is the ring of TLS session-ticket keys that the
// supervisor owns and hands to every worker, so that a client resumes its
// session on any generation: the one that issued its ticket, or the one
// that replaced it in an upgrade.
//
// crypto/tls keeps its own ticket keys inside each process (a new key
// every 24 h, each accepted for 7 days) unless the application sets them
// with [crypto/tls.Config.SetSessionTicketKeys]; a new process has new
// keys, and every returning client's resumption becomes a full handshake.
// The ring follows the same schedule by default, but it lives in the
// supervisor, which outlives the generations: a [Ring] is the keys, newest
// (the one new tickets are encrypted with) first, each with its creation
// time, which is what [Ring.Rotate] needs after an adoption carried the
// ring across supervisors. [ParseFile] reads an operator's key file
// instead.
//
// Secrets are never formatted: errors name a line number, never its text.
package ticketkeys
