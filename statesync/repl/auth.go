package repl

import (
	"bytes"
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

// ErrPeerOffersTLS means the peer opened a connection with a TLS handshake
// to a node without TLS: a peer with tls.optional, in the middle of a
// change of [tls]. It is answered as any connection is (the peer then
// connects again without TLS) and is no failed proof of the key.
var ErrPeerOffersTLS = errors.New("statesync: the peer offers TLS and this node has none")

// maxProofs bounds the proofs a side sends and accepts (the keys it holds).
const maxProofs = 8

// authenticate runs the mutual challenge-response on a fresh connection.
// Each side sends a random nonce, then proves the key with
// HMAC(key, label | own role | both nonces); the roles in the MAC stop a
// reflected answer. Each side proves with every key it holds (a count, then
// one proof per key) and accepts a proof by any key it holds, so the two
// need only one key in common: during a rolling key rotation ([old] beside
// [new, old], then [new, old] beside [new]) replication never stops.
//
// It returns this connection's own keys, one per direction (send: what this
// side seals with; recv: what it opens with), derived from a key both hold
// and both nonces, for sealing everything after (seal.go). Of several keys
// in common, both pick the same: the one whose digest sorts first.
func authenticate(c net.Conn, keys [][]byte, leader bool, timeout time.Duration) (send, recv []byte, err error) {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	var mine, theirs [32]byte
	if _, err := rand.Read(mine[:]); err != nil {
		return nil, nil, err
	}
	if _, err := c.Write(mine[:]); err != nil {
		return nil, nil, fmt.Errorf("statesync: auth: %w", err)
	}
	if _, err := io.ReadFull(c, theirs[:]); err != nil {
		return nil, nil, fmt.Errorf("statesync: auth: %w", err)
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
		return nil, nil, fmt.Errorf("statesync: auth: %w", err)
	}
	var n [1]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return nil, nil, fmt.Errorf("statesync: auth: %w", err)
	}
	if n[0] == 0 || n[0] > maxProofs {
		return nil, nil, ErrAuth
	}
	got := make([]byte, int(n[0])*sha256.Size)
	if _, err := io.ReadFull(c, got); err != nil {
		return nil, nil, fmt.Errorf("statesync: auth: %w", err)
	}
	var shared []byte // the key in common whose digest sorts first
	var sharedSum [sha256.Size]byte
	for _, k := range keys {
		for i := 0; i < len(got); i += sha256.Size {
			if hmac.Equal(got[i:i+sha256.Size], proof(k, them, mine[:], theirs[:])) {
				if sum := sha256.Sum256(k); shared == nil || bytes.Compare(sum[:], sharedSum[:]) < 0 {
					shared, sharedSum = k, sum
				}
				break
			}
		}
	}
	if shared == nil {
		return nil, nil, ErrAuth
	}
	leaderNonce, followerNonce := theirs[:], mine[:]
	if leader {
		leaderNonce, followerNonce = mine[:], theirs[:]
	}
	derive := func(dir byte) []byte {
		m := hmac.New(sha256.New, shared)
		m.Write([]byte("hapair-statesync-v1 seal"))
		m.Write([]byte{dir})
		m.Write(leaderNonce)
		m.Write(followerNonce)
		return m.Sum(nil)
	}
	return derive(me), derive(them), nil
}
