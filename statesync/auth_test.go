package statesync

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
		go func() { errs <- authenticate(a, c.leader, true, time.Second) }()
		go func() { errs <- authenticate(b, c.follow, false, time.Second) }()
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
