// Package control is the wire protocol between the launcher supervisor,
// its workers and the launcher CLI: one unix stream socket, newline-
// delimited JSON messages, a versioned handshake first, every message
// bounded in size and every read bounded in time by the caller.
//
// The same socket serves workers and CLI clients; the first message's Role
// says which. Workers prove they are the supervisor's children with the
// token it put in their environment.
//
// # Versions
//
// Neither side may depend on the other being upgraded first: the old
// generation of an upgrade runs an older library than the supervisor
// often, and a supervisor may be replaced (adoption) by an older or newer
// one under running workers. So each side speaks every version from
// [MinVersion] to [Version]:
//
//   - Version 1 matched replies by message type. Version 2 adds
//     [Message.ID]: the supervisor numbers each request to a worker
//     (Steer, Release, Quiesce) from 1, and the worker's reply carries
//     the same ID, so that two requests in flight to one worker (a quiesce
//     and a steer, say) cannot take each other's replies. Replies may
//     come in any order.
//   - A supervisor accepts a hello whose version it [Accepts] and answers
//     with a Welcome carrying the version it will speak on that
//     connection: the hello's. With a version-1 worker it matches replies
//     by type (such a worker sends no ID and answers each request type in
//     order). Any other version gets [Refusal] naming its newest version,
//     and the connection is closed. Version-1 supervisors accepted exactly
//     version 1 and answered everything else with the same refusal.
//   - A worker says hello at Version. Refused by an older supervisor, it
//     dials again and says hello at the version the refusal names, if it
//     still speaks it ([Fallback], [Negotiate]); this holds for its first
//     hello and for a rejoin after the supervisor was lost. A worker of
//     version 2 echoes a request's ID in every reply whatever it speaks: a
//     version-1 supervisor ignores the field.
//   - Clients (the CLI) send no request that version 2 changed, so a
//     supervisor accepts client hellos of every version it accepts. A
//     client is normally the same binary as the supervisor, but not after
//     the binary was replaced under a running supervisor: a client that
//     says hello at Version to a version-1 supervisor is refused with
//     "protocol: want hello version 1" unless it falls back as workers do.
//   - In a standalone handoff (EnvHandoff) the parent is the previous
//     release of the app, perhaps with an older library that reads one
//     hello of exactly version 1 and hangs up on anything else, without a
//     refusal to fall back from. The new process therefore says hello at
//     version 1 there; the handoff has no request that version 2 changed.
//     A parent accepts any version it Accepts, like a supervisor.
//
// # Capabilities
//
// What a peer does beyond the messages every version has is named in the
// Caps of its hello (a worker) or its welcome (a supervisor), and used
// only when the other side lists it too, whatever the version: a worker
// is sent TypeQuiesce only if its hello lists [CapQuiesce], and waits for
// TypeCollected after TypeDrained only if both its hello and the welcome
// list [CapFinalMetrics]; TypeTicketKeys goes only to a worker whose hello
// lists [CapTicketKeys], and only such a worker's rejoin hello carries its
// keys; a worker listens without asking only when the welcome lists
// [CapListenFree] (a standalone parent's), and listens at the welcome,
// before its app asks, only when both list [CapWelcomeGrant]. A peer
// ignores capabilities it does not know.
package control
