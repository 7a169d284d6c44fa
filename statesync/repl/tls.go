package repl

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// TLSConfigs builds the two sides of an optional TLS replication link:
// this node's certificate and key, the CA both nodes' certificates come
// from, and the peer's name, which its certificate must carry (DNS name).
//
// The files are read again at a handshake after any of them changed: a
// renewal (certbot's deploy hook, a configuration manager, a CA rotated)
// is taken in by the next connection, with no restart, which for the
// active would be a failover. A connection already made goes on with what
// it proved. Files that do not load together (a renewal half written: the
// new certificate beside the old key) leave the last ones that did in use.
// reloaded, if set, hears how reading changed files went (nil: they are
// in use), once per change: files that do not load leave the link with
// certificates whose end the files no longer say.
func TLSConfigs(certFile, keyFile, caFile, peerName string, reloaded func(error)) (server, client *tls.Config, err error) {
	files := &tlsFiles{cert: certFile, key: keyFile, ca: caFile, reloaded: reloaded}
	if _, err := files.load(); err != nil {
		return nil, nil, err
	}
	// The chain is verified by ClientAuth; the name is not, and a node
	// must not be able to pose as its peer with its own certificate.
	clientName := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("statesync: tls: no client certificate")
		}
		if err := cs.PeerCertificates[0].VerifyHostname(peerName); err != nil {
			return fmt.Errorf("statesync: tls: client certificate is not %s's: %w", peerName, err)
		}
		return nil
	}
	server = &tls.Config{MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := files.current()
			return &tls.Config{Certificates: []tls.Certificate{m.cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: m.pool, MinVersion: tls.VersionTLS13, VerifyConnection: clientName}, nil
		}}
	// A client's roots are fixed in its config, so the client verifies
	// the server's chain itself, against the CA file as it is now: what
	// crypto/tls does with RootCAs and ServerName (its documentation's
	// VerifyConnection example), with InsecureSkipVerify only to let it.
	client = &tls.Config{MinVersion: tls.VersionTLS13, ServerName: peerName, InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			m := files.current()
			return &m.cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("statesync: tls: no server certificate")
			}
			opts := x509.VerifyOptions{DNSName: peerName, Roots: files.current().pool, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
				return fmt.Errorf("statesync: tls: server certificate: %w", err)
			}
			return nil
		}}
	return server, client, nil
}

// tlsFiles keeps what TLSConfigs read, and reads it again when a file
// changed.
type tlsFiles struct {
	cert, key, ca string
	reloaded      func(error)
	mu            sync.Mutex
	loaded        tlsMaterial
	// tried are the stamps the last reading was for: one that failed
	// is tried again, and said, only once the files change again.
	tried [3]fileStamp
}

// tlsMaterial is one reading of the files: the certificate, the pool of
// CAs, and the files' stamps when they were read.
type tlsMaterial struct {
	cert   tls.Certificate
	pool   *x509.CertPool
	stamps [3]fileStamp
}

// fileStamp tells a file's content changed without reading it: a renewal
// writes it anew (another inode) or over (another time or size).
type fileStamp struct {
	ino, size int64
	mod       time.Time
}

func stampOf(name string) fileStamp {
	fi, err := os.Stat(name)
	if err != nil {
		return fileStamp{}
	}
	st := fileStamp{size: fi.Size(), mod: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = int64(sys.Ino)
	}
	return st
}

func (f *tlsFiles) stamps() [3]fileStamp {
	return [3]fileStamp{stampOf(f.cert), stampOf(f.key), stampOf(f.ca)}
}

// load reads the files; on success they are what current gives.
func (f *tlsFiles) load() (tlsMaterial, error) {
	m := tlsMaterial{stamps: f.stamps()}
	var err error
	if m.cert, err = tls.LoadX509KeyPair(f.cert, f.key); err != nil {
		return m, fmt.Errorf("statesync: tls certificate %s: %w", f.cert, err)
	}
	pem, err := os.ReadFile(f.ca)
	if err != nil {
		return m, fmt.Errorf("statesync: tls ca: %w", err)
	}
	m.pool = x509.NewCertPool()
	if !m.pool.AppendCertsFromPEM(pem) {
		return m, fmt.Errorf("statesync: tls ca %s: no certificate in it", f.ca)
	}
	f.mu.Lock()
	f.loaded = m
	f.mu.Unlock()
	return m, nil
}

// current is what the files held when they last loaded together, read
// again first if any changed since.
func (f *tlsFiles) current() tlsMaterial {
	now := f.stamps()
	f.mu.Lock()
	m, tried := f.loaded, f.tried
	f.tried = now
	f.mu.Unlock()
	if now == m.stamps || now == tried {
		return m
	}
	n, err := f.load()
	if f.reloaded != nil {
		f.reloaded(err)
	}
	if err != nil {
		return m
	}
	return n
}

// RenewWithin is how long before a certificate's end the daemon and
// --check start to warn: time for a renewal, which the next handshake
// takes in (TLSConfigs), and for someone to look if it does not come.
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
			failing = append(failing, fmt.Sprintf("%s expired on %s: the replication link's TLS handshakes fail, so the standby holds no session; renew it: the link's next connection reads the new files, with no restart", name, c.NotAfter.UTC().Format(time.DateOnly)))
		case now.Before(c.NotBefore):
			failing = append(failing, fmt.Sprintf("%s is not valid before %s (is this machine's clock right?): the replication link's TLS handshakes fail, so the standby holds no session", name, c.NotBefore.UTC().Format(time.RFC3339)))
		case c.NotAfter.Sub(now) < RenewWithin:
			left := fmt.Sprintf("%d days", c.NotAfter.Sub(now)/day)
			if c.NotAfter.Sub(now) < 2*day {
				left = fmt.Sprintf("%d hours", c.NotAfter.Sub(now)/time.Hour)
			}
			soon = append(soon, fmt.Sprintf("%s expires on %s, in %s: renew it, or the replication link fails then (its next connection reads the new files, with no restart)", name, c.NotAfter.UTC().Format(time.DateOnly), left))
		}
	}
	return failing, soon
}
