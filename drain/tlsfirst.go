package drain

import (
	"crypto/tls"
	"slices"
)

// A TLS connection's first request. Before it, what a connection reads is
// mostly the handshake, whose end net/http does not report; yet a client
// that sends its first request's header slowly must be busy from its first
// byte, as over plain TCP. So until then the connection follows the TLS
// records its client sends (RFC 8446, section 5.1; RFC 5246, section
// 6.2): their 5-byte headers only, never their (encrypted) contents.
//
//   - TLS 1.2 and older: every handshake record is a handshake (22),
//     change_cipher_spec (20) or alert (21) record, the client's encrypted
//     Finished included; the first application_data (23) record is the
//     first request.
//   - TLS 1.3: from the server's first flight on, the client's handshake
//     is encrypted as application_data (23) records: without a client
//     certificate asked for, exactly one, its Finished (the client can
//     send no request in it: a request is encrypted with other keys, so in
//     a record of its own). The second application_data record is the
//     first request.
//
// Which one applies is decided when crypto/tls has read the ClientHello:
// the Server's GetConfigForClient (see watchHandshakes) tells the
// connection whether the client or the config rules TLS 1.3 out, and
// whether a client certificate may be asked for. The config's choice
// itself is not known there; a connection treated as TLS 1.3 that is in
// fact TLS 1.2 (a client listing 1.2 before 1.3) takes the first record of
// its first request for a Finished, which leaves it waiting a record
// longer: the rule from before this tracking. Whatever cannot be told —
// a client certificate may be asked for (its Certificate and
// CertificateVerify precede the Finished, and crypto/tls may read them
// together), an application_data record before the ClientHello was
// handled, a record header that is not TLS — ends the tracking, and the
// connection stays waiting until net/http reads its first request's
// header. Never the other way: a handshake record is never taken for a
// request, which would keep an idle connection (a browser's preconnect)
// until the drain's deadline.
//
// After the Finished, a TLS 1.3 client could in principle send a KeyUpdate
// or close_notify before any request (both application_data records); the
// first is not known to be sent by any client before a request, the second
// is followed by the client's FIN, on which net/http closes the
// connection.

// What a connection's next application_data record is.
const (
	appUnknown  = iota // the ClientHello is not handled yet
	appRequest         // the first request
	appFinished        // the client's TLS 1.3 Finished
	appOff             // not known: the records are no longer followed
)

// TLS record content types (RFC 8446, section 5.1).
const (
	recordChangeCipherSpec = 20
	recordApplicationData  = 23
)

// maxRecord is the largest record body a client may send: 2^14 bytes of
// plaintext plus TLS 1.2's expansion (RFC 5246, section 6.2.3; TLS 1.3
// allows 256, RFC 8446, section 5.2).
const maxRecord = 1<<14 + 2048

// tlsRecords follows the records a client sends, across reads. Only the
// connection's reader touches it: crypto/tls reads, and calls
// GetConfigForClient, under its input lock, and net/http reads no more
// with it once the first request's header is read.
type tlsRecords struct {
	next   uint8  // what the next application_data record is: app*
	header uint8  // bytes of the current record's header read: 0 to 5
	left   uint16 // bytes of the current record's body not yet read
}

// read follows b, the next bytes the client sent, and reports whether a
// request begins in them.
func (r *tlsRecords) read(b []byte) bool {
	for len(b) > 0 && r.next != appOff {
		if r.header == 5 {
			n := min(int(r.left), len(b))
			r.left -= uint16(n)
			b = b[n:]
			if r.left == 0 {
				r.header = 0
			}
			continue
		}
		c := b[0]
		b = b[1:]
		switch r.header {
		case 0: // content type
			switch {
			case c < recordChangeCipherSpec || c > recordApplicationData:
				r.next = appOff // not a record of TLS ≤ 1.3
				return false
			case c != recordApplicationData:
			case r.next == appRequest:
				return true
			case r.next == appFinished:
				r.next = appRequest
			default:
				r.next = appOff
				return false
			}
		case 1: // the version's major number: 3 since SSL 3.0
			if c != 3 {
				r.next = appOff
				return false
			}
		case 3:
			r.left = uint16(c) << 8
		case 4:
			r.left |= uint16(c)
			if r.left > maxRecord {
				r.next = appOff
				return false
			}
		}
		r.header++
		if r.header == 5 && r.left == 0 {
			r.header = 0
		}
	}
	return false
}

// expect tells r what follows the ClientHello: tls12 when TLS 1.3 is ruled
// out, clientCert when the server may ask for a client certificate.
func (r *tlsRecords) expect(tls12, clientCert bool) {
	if r.next != appUnknown {
		return // an application_data record came before: not known
	}
	switch {
	case tls12:
		r.next = appRequest
	case clientCert:
		r.next = appOff
	default:
		r.next = appFinished
	}
}

// watchHandshakes returns a copy of cfg (an empty config when nil) whose
// GetConfigForClient tells each tracked connection, once crypto/tls has
// read its ClientHello, what its client's records will be (see
// tlsRecords), and then does what cfg's own did: it returns what that
// returns, or nil (crypto/tls then uses the config it has). The config
// crypto/tls uses is left alone: net/http's ServeTLS clone of cfg, with
// its certificates, ALPN protocols and session-ticket keys.
func watchHandshakes(cfg *tls.Config) *tls.Config {
	if cfg == nil {
		cfg = new(tls.Config)
	} else {
		cfg = cfg.Clone()
	}
	next := cfg.GetConfigForClient
	maxVersion, clientAuth := cfg.MaxVersion, cfg.ClientAuth
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		var chosen *tls.Config
		if next != nil {
			var err error
			if chosen, err = next(hello); err != nil {
				return nil, err
			}
		}
		if c, ok := hello.Conn.(*Conn); ok {
			maxV, auth := maxVersion, clientAuth
			if chosen != nil {
				maxV, auth = chosen.MaxVersion, chosen.ClientAuth
			}
			tls12 := !slices.Contains(hello.SupportedVersions, tls.VersionTLS13) || (maxV != 0 && maxV < tls.VersionTLS13)
			c.rec.expect(tls12, auth != tls.NoClientCert)
		}
		return chosen, nil
	}
	return cfg
}

// hasCertificate reports whether cfg can serve a handshake without the
// certificate files of ServeTLS, as net/http's ServeTLS decides it.
func hasCertificate(cfg *tls.Config) bool {
	return cfg != nil && (len(cfg.Certificates) > 0 || cfg.GetCertificate != nil || cfg.GetConfigForClient != nil)
}
