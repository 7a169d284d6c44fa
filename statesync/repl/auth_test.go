package repl

import (
	"bytes"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// socketPair is a connected pair of unix stream sockets: buffered like TCP,
// unlike net.Pipe, and no network traffic at all.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return conn(fds[0]), conn(fds[1])
}

// The replication handshake needs only one key in common, so each step of
// a rolling rotation keeps the link up; with none in common it fails on
// both sides.
func TestAuthenticateAcrossRotation(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	for _, c := range []struct {
		name           string
		leader, follow [][]byte
		ok             bool
	}{
		{"[old] and [old]", [][]byte{oldKey}, [][]byte{oldKey}, true},
		{"[new, old] and [old]", [][]byte{newKey, oldKey}, [][]byte{oldKey}, true},
		{"[old] and [new, old]", [][]byte{oldKey}, [][]byte{newKey, oldKey}, true},
		{"[new] and [new, old]", [][]byte{newKey}, [][]byte{newKey, oldKey}, true},
		{"[new] and [old]", [][]byte{newKey}, [][]byte{oldKey}, false},
	} {
		a, b := socketPair(t)
		errs := make(chan error, 2)
		keys := make(chan [2][]byte, 2)
		go func() {
			s, r, err := authenticate(a, c.leader, true, time.Second)
			keys <- [2][]byte{s, r}
			errs <- err
		}()
		go func() {
			s, r, err := authenticate(b, c.follow, false, time.Second)
			keys <- [2][]byte{r, s} // the follower's recv is the leader's send
			errs <- err
		}()
		if k1, k2 := <-keys, <-keys; c.ok && (!bytes.Equal(k1[0], k2[0]) || !bytes.Equal(k1[1], k2[1]) || bytes.Equal(k1[0], k1[1])) {
			t.Errorf("%s: the two sides derived different keys, or one for both directions", c.name)
		}
		for range 2 {
			err := <-errs
			if c.ok && err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			if !c.ok && !errors.Is(err, ErrAuth) {
				t.Errorf("%s: got %v, want ErrAuth", c.name, err)
			}
		}
		a.Close()
		b.Close()
	}
}
