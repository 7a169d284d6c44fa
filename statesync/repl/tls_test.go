package repl

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

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
	srv, cli, err := TLSConfigs(filepath.Join(dir, self+".crt"), filepath.Join(dir, self+".key"), filepath.Join(dir, "ca.crt"), peer)
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
