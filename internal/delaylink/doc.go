// Package delaylink is a slow network link for tests: two network
// namespaces joined by a pair of TUN devices, with a copier that holds
// every IP packet for a fixed one-way delay before passing it on.
//
// The kernel's netem qdisc would do this with tc, but it is not built into
// every kernel (this project's CI kernel lacks it). A TUN device hands its
// namespace's outgoing packets to a file descriptor and injects what is
// written there as received packets, so a copier between two of them, in
// any process, is a point-to-point link whose delay the copier chooses.
//
//   - [Link] copies packets between two packet endpoints in both
//     directions, each packet held for the delay (FIFO, a bounded queue:
//     a packet that finds it full is dropped, like a congested link).
//   - [OpenTUN] creates a TUN device inside a given network namespace,
//     on a locked OS thread switched there with setns(2).
//   - [NewPair] makes the whole setup: two named namespaces (ip netns),
//     one TUN each with an address and a route, loopback up, and a Link
//     between them; [Pair.Close] removes all of it.
//
// The e2e tests use it to run the supervisor in one namespace and a load
// client in the other, 100–300 ms apart, as real clients are. Addresses
// exist only inside those namespaces: no packet leaves them.
package delaylink
