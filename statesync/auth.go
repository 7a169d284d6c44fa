package statesync

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// ErrAuth means the peer could not prove it holds the shared key.
var ErrAuth = errors.New("statesync: peer failed authentication")

// authenticate runs the mutual challenge-response on a fresh connection.
// Each side sends a random nonce, then proves the key with
// HMAC(key, label | own role | both nonces); the roles in the MAC stop a
// reflected answer. Any of keys is accepted from the peer; keys[0] proves.
func authenticate(c net.Conn, keys [][]byte, leader bool, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	var mine, theirs [32]byte
	if _, err := rand.Read(mine[:]); err != nil {
		return err
	}
	if _, err := c.Write(mine[:]); err != nil {
		return fmt.Errorf("statesync: auth: %w", err)
	}
	if _, err := io.ReadFull(c, theirs[:]); err != nil {
		return fmt.Errorf("statesync: auth: %w", err)
	}
	me, them := byte('F'), byte('L')
	if leader {
		me, them = 'L', 'F'
	}
	proof := func(key []byte, role byte, a, b []byte) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte("hapair-statesync-v1"))
		m.Write([]byte{role})
		m.Write(a)
		m.Write(b)
		return m.Sum(nil)
	}
	// My proof covers (their nonce, my nonce), theirs (my nonce, their nonce).
	if _, err := c.Write(proof(keys[0], me, theirs[:], mine[:])); err != nil {
		return fmt.Errorf("statesync: auth: %w", err)
	}
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("statesync: auth: %w", err)
	}
	for _, k := range keys {
		if hmac.Equal(got, proof(k, them, mine[:], theirs[:])) {
			return nil
		}
	}
	return ErrAuth
}
