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

// maxProofs bounds the proofs a side sends and accepts (the keys it holds).
const maxProofs = 8

// authenticate runs the mutual challenge-response on a fresh connection.
// Each side sends a random nonce, then proves the key with
// HMAC(key, label | own role | both nonces); the roles in the MAC stop a
// reflected answer. Each side proves with every key it holds (a count, then
// one proof per key) and accepts a proof by any key it holds, so the two
// need only one key in common: during a rolling key rotation ([old] beside
// [new, old], then [new, old] beside [new]) replication never stops.
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
	// My proofs cover (their nonce, my nonce), theirs (my nonce, their
	// nonce).
	if len(keys) > maxProofs {
		keys = keys[:maxProofs]
	}
	out := []byte{byte(len(keys))}
	for _, k := range keys {
		out = append(out, proof(k, me, theirs[:], mine[:])...)
	}
	if _, err := c.Write(out); err != nil {
		return fmt.Errorf("statesync: auth: %w", err)
	}
	var n [1]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return fmt.Errorf("statesync: auth: %w", err)
	}
	if n[0] == 0 || n[0] > maxProofs {
		return ErrAuth
	}
	got := make([]byte, int(n[0])*sha256.Size)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("statesync: auth: %w", err)
	}
	for i := 0; i < len(got); i += sha256.Size {
		for _, k := range keys {
			if hmac.Equal(got[i:i+sha256.Size], proof(k, them, mine[:], theirs[:])) {
				return nil
			}
		}
	}
	return ErrAuth
}
