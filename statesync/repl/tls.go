package repl

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"time"
)

// TLSConfigs builds the two sides of an optional TLS replication link:
// this node's certificate and key, the CA both nodes' certificates come
// from, and the peer's name, which its certificate must carry (DNS name).
func TLSConfigs(certFile, keyFile, caFile, peerName string) (server, client *tls.Config, err error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("statesync: tls certificate %s: %w", certFile, err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, nil, fmt.Errorf("statesync: tls ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("statesync: tls ca %s: no certificate in it", caFile)
	}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS13,
		// The chain is verified by ClientAuth; the name is not, and a
		// node must not be able to pose as its peer with its own
		// certificate.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("statesync: tls: no client certificate")
			}
			if err := cs.PeerCertificates[0].VerifyHostname(peerName); err != nil {
				return fmt.Errorf("statesync: tls: client certificate is not %s's: %w", peerName, err)
			}
			return nil
		}}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: peerName, MinVersion: tls.VersionTLS13}
	return server, client, nil
}

// RenewWithin is how long before a certificate's end the daemon and
// --check start to warn: time for a renewal and for the restarts that take
// it in (the daemon reads its files at start only).
const RenewWithin = 30 * 24 * time.Hour

// CertDate is when a certificate of the replication link's is valid.
type CertDate struct {
	File      string    `json:"file"`
	Subject   string    `json:"subject"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

// CertDates reads the dates of this node's certificate (certFile, with any
// chain in it) and of the CAs in caFile that signed one of them: a bundle
// kept through a CA's rotation holds the old CA, whose end breaks nothing.
// A bundle none of whose CAs signed it counts whole (the handshakes fail
// on that already; the dates still say what they can).
func CertDates(certFile, caFile string) ([]CertDate, error) {
	mine, err := readCerts(certFile)
	if err != nil {
		return nil, err
	}
	cas, err := readCerts(caFile)
	if err != nil {
		return nil, err
	}
	signers := cas[:0:0]
	for _, ca := range cas {
		for _, c := range mine {
			if c.CheckSignatureFrom(ca) == nil {
				signers = append(signers, ca)
				break
			}
		}
	}
	if len(signers) == 0 {
		signers = cas
	}
	// Each once per file: they label a metric, which must not repeat.
	var out []CertDate
	seen := map[CertDate]bool{}
	add := func(file string, certs []*x509.Certificate) {
		for _, c := range certs {
			d := CertDate{File: file, Subject: c.Subject.String(), NotBefore: c.NotBefore, NotAfter: c.NotAfter}
			if !seen[CertDate{File: file, Subject: d.Subject}] {
				seen[CertDate{File: file, Subject: d.Subject}] = true
				out = append(out, d)
			}
		}
	}
	add(certFile, mine)
	add(caFile, signers)
	return out, nil
}

// readCerts reads every certificate in a PEM file.
func readCerts(f string) ([]*x509.Certificate, error) {
	rest, err := os.ReadFile(f)
	if err != nil {
		return nil, fmt.Errorf("statesync: tls: %w", err)
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return out, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("statesync: tls: %s: %w", f, err)
		}
		out = append(out, c)
	}
}

// DateWarnings says, at now, which of certs fail the replication link's
// handshakes by their dates (failing), and which will within RenewWithin
// (soon). It is the link that fails, not the heartbeats: the pair still
// fails over, but its standby holds no session to continue.
func DateWarnings(certs []CertDate, now time.Time) (failing, soon []string) {
	const day = 24 * time.Hour
	for _, c := range certs {
		name := fmt.Sprintf("certificate %s (%s)", c.File, c.Subject)
		switch {
		case !now.Before(c.NotAfter):
			failing = append(failing, fmt.Sprintf("%s expired on %s: the replication link's TLS handshakes fail, so the standby holds no session; renew it, then restart the standby, switch over and restart the other node", name, c.NotAfter.UTC().Format(time.DateOnly)))
		case now.Before(c.NotBefore):
			failing = append(failing, fmt.Sprintf("%s is not valid before %s (is this machine's clock right?): the replication link's TLS handshakes fail, so the standby holds no session", name, c.NotBefore.UTC().Format(time.RFC3339)))
		case c.NotAfter.Sub(now) < RenewWithin:
			left := fmt.Sprintf("%d days", c.NotAfter.Sub(now)/day)
			if c.NotAfter.Sub(now) < 2*day {
				left = fmt.Sprintf("%d hours", c.NotAfter.Sub(now)/time.Hour)
			}
			soon = append(soon, fmt.Sprintf("%s expires on %s, in %s: renew it, then restart the standby, switch over and restart the other node, or the replication link fails then", name, c.NotAfter.UTC().Format(time.DateOnly), left))
		}
	}
	return failing, soon
}
