package repl

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hapair/hapair/lab/pki"

	"github.com/hapair/hapair/statesync/store"
)

func makePKI(t *testing.T, dir, caName string, names ...string) {
	t.Helper()
	if err := pki.Write(dir, caName, names...); err != nil {
		t.Fatal(err)
	}
}

func tlsNode(t *testing.T, dir, self, peer, peerAddr string, active bool) *node {
	t.Helper()
	srv, cli, err := TLSConfigs(filepath.Join(dir, self+".crt"), filepath.Join(dir, self+".key"), filepath.Join(dir, "ca.crt"), peer, nil)
	if err != nil {
		t.Fatal(err)
	}
	return startNodeCfg(t, store.New(store.Limits{}), Config{Keys: [][]byte{key}, Peer: peerAddr, TLSServer: srv, TLSClient: cli}, active)
}

func TestReplicationOverTLS(t *testing.T) {
	dir := t.TempDir()
	makePKI(t, dir, "pair-ca", "a", "b")
	leader := tlsNode(t, dir, "a", "b", "", true)
	follower := tlsNode(t, dir, "b", "a", leader.ln.Addr().String(), false)
	for i := 0; i < 100; i++ {
		write(t, leader.store, store.OpCreate, fmt.Sprint(i), "x")
	}
	waitFor(t, "replication over TLS", func() bool { _, s := follower.store.Seq(); return s == 100 })

	// A node whose certificate comes from another CA gets nothing.
	other := t.TempDir()
	makePKI(t, other, "rogue-ca", "b")
	os.WriteFile(filepath.Join(other, "ca.crt"), mustRead(t, filepath.Join(dir, "ca.crt")), 0o600) // it trusts our CA, we don't trust it
	rogue := tlsNode(t, other, "b", "a", leader.ln.Addr().String(), false)
	before := leader.repl.Stats().AuthErrors
	waitFor(t, "the rogue to be refused", func() bool { return leader.repl.Stats().AuthErrors > before })
	if rogue.store.Len() != 0 {
		t.Error("a follower with a foreign certificate got data")
	}
	// ... and cannot push the real standby off the link.
	write(t, leader.store, store.OpCreate, "after", "x")
	waitFor(t, "the real standby to keep following", func() bool { _, ok := follower.store.Get("after"); return ok })
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A daemon runs for months past the day it read its certificates: the
// dates are read from the files, and judged at any time given.
func TestCertDateWarnings(t *testing.T) {
	dir := t.TempDir()
	if err := pki.WriteValid(dir, "pair-ca", 90*24*time.Hour, "a"); err != nil {
		t.Fatal(err)
	}
	certs, err := CertDates(filepath.Join(dir, "a.crt"), filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || certs[0].Subject != "CN=a" || certs[1].Subject != "CN=pair-ca" {
		t.Fatalf("dates read: %+v", certs)
	}
	leaf := certs[0]
	for _, c := range []struct {
		name          string
		at            time.Time
		failing, soon string
	}{
		{"well before its end", leaf.NotAfter.Add(-60 * 24 * time.Hour), "", ""},
		{"within a month of its end", leaf.NotAfter.Add(-20 * 24 * time.Hour), "", "in 20 days"},
		{"on its last day", leaf.NotAfter.Add(-5 * time.Hour), "", "in 5 hours"},
		{"past its end", leaf.NotAfter.Add(time.Second), "expired on " + leaf.NotAfter.UTC().Format(time.DateOnly), ""},
		{"before its start", leaf.NotBefore.Add(-time.Minute), "is not valid before", ""},
	} {
		failing, soon := DateWarnings(certs, c.at)
		// What is said of a's certificate (the CA's dates differ).
		got := func(l []string, want string) bool {
			var of []string
			for _, m := range l {
				if strings.Contains(m, "a.crt (CN=a)") {
					of = append(of, m)
				}
			}
			if want == "" {
				return len(of) == 0
			}
			return len(of) == 1 && strings.Contains(of[0], want)
		}
		if !got(failing, c.failing) || !got(soon, c.soon) {
			t.Errorf("%s: failing %q, soon %q; want %q and %q", c.name, failing, soon, c.failing, c.soon)
		}
	}
	if _, err := CertDates(filepath.Join(dir, "none.crt"), filepath.Join(dir, "ca.crt")); err == nil {
		t.Error("a missing file gave no error")
	}
	// A CA bundle kept through a rotation: the old CA signed nothing of
	// this node's, and its end is not judged.
	old := t.TempDir()
	if err := pki.WriteValid(old, "old-ca", time.Hour, "a"); err != nil {
		t.Fatal(err)
	}
	oldCA, _ := os.ReadFile(filepath.Join(old, "ca.crt"))
	newCA, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	bundle := filepath.Join(dir, "bundle.crt")
	if err := os.WriteFile(bundle, append(oldCA, newCA...), 0o600); err != nil {
		t.Fatal(err)
	}
	certs, err = CertDates(filepath.Join(dir, "a.crt"), bundle)
	if err != nil || len(certs) != 2 || certs[1].Subject != "CN=pair-ca" {
		t.Errorf("dates with a bundle: %+v %v", certs, err)
	}
}

// Certificates renewed on disk are taken in at the next handshake, with no
// restart (for the active, a failover): a new CA and new certificates for
// both nodes. A renewal half written (a certificate beside a key not its
// own) leaves the last good ones in use. The client's own check of the
// server's chain and name, which the reloading needs, still refuses a
// server of another CA or with another node's name.
func TestRenewedCertificatesAreTakenInWithoutARestart(t *testing.T) {
	gen := func(ca string) string {
		d := t.TempDir()
		makePKI(t, d, ca, "a", "b")
		return d
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	install := func(from, to, name string) {
		for _, f := range []string{name + ".crt", name + ".key", "ca.crt"} {
			if err := os.WriteFile(filepath.Join(to, f), mustRead(t, filepath.Join(from, f)), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	first := gen("ca-1")
	install(first, dirA, "a")
	install(first, dirB, "b")
	var loads, failures atomic.Int32 // what a's reloads said
	srv, _, err := TLSConfigs(filepath.Join(dirA, "a.crt"), filepath.Join(dirA, "a.key"), filepath.Join(dirA, "ca.crt"), "b", func(err error) {
		if err != nil {
			failures.Add(1)
		} else {
			loads.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	_, cli, err := TLSConfigs(filepath.Join(dirB, "b.crt"), filepath.Join(dirB, "b.key"), filepath.Join(dirB, "ca.crt"), "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	// handshake says which CA issued the certificate each side saw.
	handshake := func() (server, client string, err error) {
		// Over TCP, whose buffers let a side that refuses say so while
		// the other still writes (net.Pipe has none).
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		errs := make(chan error, 1)
		var s *tls.Conn
		go func() {
			c1, err := ln.Accept()
			if err != nil {
				errs <- err
				return
			}
			defer c1.Close()
			c1.SetDeadline(time.Now().Add(10 * time.Second)) // bounds a broken test only
			s = tls.Server(c1, srv)
			errs <- s.Handshake()
		}()
		c2, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		c2.SetDeadline(time.Now().Add(10 * time.Second))
		c := tls.Client(c2, cli)
		cerr := c.Handshake()
		if cerr != nil {
			c2.Close()
		}
		serr := <-errs
		if err := errors.Join(cerr, serr); err != nil {
			return "", "", err
		}
		return s.ConnectionState().PeerCertificates[0].Issuer.CommonName, c.ConnectionState().PeerCertificates[0].Issuer.CommonName, nil
	}
	if s, c, err := handshake(); err != nil || s != "ca-1" || c != "ca-1" {
		t.Fatalf("first handshake: the server saw %q, the client %q, %v", s, c, err)
	}
	second := gen("ca-2")
	install(second, dirA, "a")
	install(second, dirB, "b")
	if s, c, err := handshake(); err != nil || s != "ca-2" || c != "ca-2" {
		t.Fatalf("after the renewal: the server saw %q, the client %q, %v", s, c, err)
	}
	if l, f := loads.Load(), failures.Load(); l != 1 || f != 0 {
		t.Errorf("a's renewal: %d loads and %d failures said, want 1 and 0", l, f)
	}
	// Half written: a's new certificate is there, its key not yet.
	third := gen("ca-3")
	os.WriteFile(filepath.Join(dirA, "a.crt"), mustRead(t, filepath.Join(third, "a.crt")), 0o600)
	for range 2 {
		if s, c, err := handshake(); err != nil || s != "ca-2" || c != "ca-2" {
			t.Fatalf("half renewed: the server saw %q, the client %q, %v", s, c, err)
		}
	}
	// Said once, not at each handshake.
	if l, f := loads.Load(), failures.Load(); l != 1 || f != 1 {
		t.Errorf("half renewed: %d loads and %d failures said, want 1 and 1", l, f)
	}
	// a now wholly on ca-3, which b does not trust: refused by b.
	install(third, dirA, "a")
	if _, _, err := handshake(); err == nil || !strings.Contains(err.Error(), "server certificate") {
		t.Fatalf("a server of a CA the client does not hold: %v", err)
	}
	// a with b's certificate (ca-2's, b's name): refused by b as well.
	for _, f := range []string{"crt", "key"} {
		os.WriteFile(filepath.Join(dirA, "a."+f), mustRead(t, filepath.Join(second, "b."+f)), 0o600)
	}
	os.WriteFile(filepath.Join(dirA, "ca.crt"), mustRead(t, filepath.Join(second, "ca.crt")), 0o600)
	if _, _, err := handshake(); err == nil || !strings.Contains(err.Error(), "server certificate") {
		t.Fatalf("a server with another node's name: %v", err)
	}
}

// TLSOptional, for the rolling change that turns TLS on or off: a node
// with it replicates with a peer without TLS (sealed by the key alone, as
// that peer does) and with one with TLS (in TLS), as active or standby;
// without it, a node with TLS and one without never connect.
func TestOptionalTLSReplicatesWithEitherPeer(t *testing.T) {
	dir := t.TempDir()
	makePKI(t, dir, "pair-ca", "a", "b")
	cfg := func(self, peer string, tlsOn, optional bool) Config {
		c := Config{Keys: [][]byte{key}, TLSOptional: optional}
		if tlsOn {
			srv, cli, err := TLSConfigs(filepath.Join(dir, self+".crt"), filepath.Join(dir, self+".key"), filepath.Join(dir, "ca.crt"), peer, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.TLSServer, c.TLSClient = srv, cli
		}
		return c
	}
	type side struct{ tls, optional bool }
	plain, optional, required := side{}, side{true, true}, side{true, false}
	for _, tc := range []struct {
		name              string
		active, standby   side
		connects, overTLS bool
	}{
		{"optional active, standby without", optional, plain, true, false},
		{"optional active, standby with", optional, required, true, true},
		{"active without, optional standby", plain, optional, true, false},
		{"active with, optional standby", required, optional, true, true},
		{"both optional", optional, optional, true, true},
		{"active with, standby without", required, plain, false, false},
		{"active without, standby with", plain, required, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// What the active without TLS hears of a standby's TLS
			// offer: that, never a failed proof of the key.
			offers := make(chan error, 100)
			lc := cfg("a", "b", tc.active.tls, tc.active.optional)
			lc.OnError = func(err error) {
				select {
				case offers <- err:
				default:
				}
			}
			leader := startNodeCfg(t, store.New(store.Limits{}), lc, true)
			c := cfg("b", "a", tc.standby.tls, tc.standby.optional)
			c.Peer = leader.ln.Addr().String()
			follower := startNodeCfg(t, store.New(store.Limits{}), c, false)
			write(t, leader.store, store.OpCreate, "s", "x")
			if !tc.connects {
				time.Sleep(500 * time.Millisecond) // ten tries of the standby's
				if _, ok := follower.store.Get("s"); ok || leader.repl.Connected() {
					t.Fatal("a node with TLS and one without connected, neither optional")
				}
				return
			}
			waitFor(t, "the session on the standby", func() bool { _, ok := follower.store.Get("s"); return ok })
			if got := leader.repl.OverTLS(); got != tc.overTLS || follower.repl.OverTLS() != tc.overTLS {
				t.Errorf("over TLS: active %v, standby %v, want %v", got, follower.repl.OverTLS(), tc.overTLS)
			}
			if tc.active.tls || !tc.standby.tls {
				return
			}
			if n := leader.repl.Stats().AuthErrors; n != 0 {
				t.Errorf("the active without TLS counted %d failed proofs of the key", n)
			}
			select {
			case err := <-offers:
				if !errors.Is(err, ErrPeerOffersTLS) {
					t.Errorf("the active without TLS heard %v, want %v", err, ErrPeerOffersTLS)
				}
			default:
				t.Error("the active without TLS heard nothing of the standby's TLS offer")
			}
		})
	}
}
