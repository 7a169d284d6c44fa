package heartbeat

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"
)

// EtherType is IEEE 802 Local Experimental EtherType 1: for protocols that
// never leave a site's own links, as a dedicated heartbeat link is.
const EtherType = 0x88B5

// Wire constants.
const (
	FrameLen   = 128
	Version    = 2
	typeBeat   = 1
	macOffset  = 96
	noAge      = ^uint64(0)
	headerLen  = 6
	magicValue = "HPHB"
	// HeldKeys is how many of its keys, newest first, a frame says its
	// sender holds.
	HeldKeys = 3
)

// Role is the sender's role as carried on the wire.
type Role uint8

// Roles, matching design.md section 3.
const (
	RoleInit Role = iota
	RoleStandby
	RoleActive
	RoleFault
)

var roleNames = [...]string{"init", "standby", "active", "fault"}

func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// Flags are the sender's attributes.
type Flags uint16

// Flag bits.
const (
	FlagLocked Flags = 1 << iota
	FlagFault
	// FlagLeaving: an active handing over (switchover, or a graceful
	// stop); from a node that is not active, its last frame before a
	// graceful stop.
	FlagLeaving
	FlagSplitBrain
	FlagPreferred
	FlagHolding // the sender has claimed the VIPs
	// FlagDeaf: the sender hears no frame of ours (every path silent for
	// a dead interval, or none heard since it started). Set by its
	// heartbeat core. An older sender never sets it: it reads as "hears".
	FlagDeaf
	// FlagAgentDied: the sender's agent died (killed, a panic); these are
	// its heartbeat core's last frames (with FAULT, and Leaving when not
	// active). An older receiver ignores it.
	FlagAgentDied
	// FlagFenced: the sender's agent let its lease run out (it hangs) and
	// its heartbeat core says FAULT for it (with FlagFault): nothing on
	// that node acts until the agent is back, so a peer waiting on it
	// for anything takes over instead. An older receiver ignores it.
	FlagFenced
	// FlagLate: the sender's heartbeat loop is late (its CPU kept from
	// it, the process paused): a relief sender sent the loop's last
	// frame for it, or this is the loop's first send after the pause,
	// which goes out before it reads. Its echo is what the loop last
	// read, however old, so it says nothing of whether the sender hears
	// us. An older receiver ignores the flag, and may take a stall for a
	// one-way link on every path, as it did before.
	FlagLate
)

// Frame is one heartbeat.
type Frame struct {
	Flags   Flags
	Cluster uint32
	Node    uint8
	Role    Role
	// Path is the index of the path the frame was sent on: each path
	// has its own replay window, so the copy of a frame on the second
	// path is not taken for a replay, and a copy cannot be moved to
	// another path.
	Path uint8
	// Dead is the sender's dead interval (zero: not said; an older
	// sender wrote the byte as reserved, zero). Two nodes run their own
	// timers while a change goes one node at a time; each judges the
	// other by the longer dead interval of the two, so a node at fast
	// does not take a peer that still sends every 100 ms for lost. One
	// byte (putDead), rounded up.
	Dead time.Duration
	// Key is the fingerprint of the key that signed the frame; Held are
	// the fingerprints of the keys the sender holds, newest first, zero
	// where it holds fewer. A receiver verifies with the key named, and
	// signs its own frames with the newest key the sender holds, so a
	// rolling key change never leaves the two without a common key.
	Key        uint32
	Held       [HeldKeys]uint32
	Generation uint64
	Seq        uint64
	// ActiveFor and LastNewSession are ages at the time of sending; a
	// negative value means "not active" and "no new session" respectively.
	ActiveFor      time.Duration
	LastNewSession time.Duration
	SyncWritten    uint64
	SyncAcked      uint64
	// EchoGeneration and EchoSeq are the receiver's own boot generation
	// and newest sequence as the sender last heard them (zero: not
	// heard), as BFD echoes the remote discriminator: they tell the
	// receiver that the sender hears it, and that the frame is no older
	// than the receiver's current boot.
	EchoGeneration uint64
	EchoSeq        uint64
	MAC            [32]byte
}

// Errors from UnmarshalBinary. A short frame is io.ErrUnexpectedEOF.
var (
	ErrMagic   = errors.New("heartbeat: bad magic")
	ErrVersion = errors.New("heartbeat: unknown version")
	ErrType    = errors.New("heartbeat: unknown frame type")
	ErrLength  = errors.New("heartbeat: wrong length")
)

func putAge(b []byte, d time.Duration) {
	if d < 0 {
		binary.BigEndian.PutUint64(b, noAge)
		return
	}
	binary.BigEndian.PutUint64(b, uint64(d/time.Millisecond))
}

func getAge(b []byte) time.Duration {
	v := binary.BigEndian.Uint64(b)
	if v == noAge || v > uint64(1<<63-1)/uint64(time.Millisecond) {
		return -1
	}
	return time.Duration(v) * time.Millisecond
}

// deadUnits are the steps of a frame's dead interval byte: a code is
// unit<<6 | n, n from 1 to 63 units (1-63 ms, 10-630 ms, 0.1-6.3 s,
// 1-63 s).
var deadUnits = [4]time.Duration{time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond, time.Second}

// putDead encodes d in one byte in the finest unit that holds it, rounded
// up: a receiver that judges by it waits longer, never less. Zero (not
// said) for none, or for more than 63 s, which the receiver then does not
// go by.
func putDead(d time.Duration) byte {
	if d <= 0 {
		return 0
	}
	for u, unit := range deadUnits {
		if n := (d + unit - 1) / unit; n <= 63 {
			return byte(u<<6) | byte(n)
		}
	}
	return 0
}

func getDead(b byte) time.Duration { return time.Duration(b&63) * deadUnits[b>>6] }

// MarshalBinary encodes f, MAC field as it stands (see Signer).
func (f *Frame) MarshalBinary() ([]byte, error) {
	b := make([]byte, FrameLen)
	f.put(b)
	return b, nil
}

func (f *Frame) put(b []byte) {
	copy(b[0:4], magicValue)
	b[4] = Version
	b[5] = typeBeat
	binary.BigEndian.PutUint16(b[6:8], uint16(f.Flags))
	binary.BigEndian.PutUint32(b[8:12], f.Cluster)
	b[12] = f.Node
	b[13] = byte(f.Role)
	b[14] = f.Path
	b[15] = putDead(f.Dead)
	binary.BigEndian.PutUint32(b[16:20], f.Key)
	for i, k := range f.Held {
		binary.BigEndian.PutUint32(b[20+4*i:], k)
	}
	binary.BigEndian.PutUint64(b[32:40], f.Generation)
	binary.BigEndian.PutUint64(b[40:48], f.Seq)
	putAge(b[48:56], f.ActiveFor)
	putAge(b[56:64], f.LastNewSession)
	binary.BigEndian.PutUint64(b[64:72], f.SyncWritten)
	binary.BigEndian.PutUint64(b[72:80], f.SyncAcked)
	binary.BigEndian.PutUint64(b[80:88], f.EchoGeneration)
	binary.BigEndian.PutUint64(b[88:96], f.EchoSeq)
	copy(b[macOffset:], f.MAC[:])
}

// checkHeader says whether b can be a frame of this version at all.
func checkHeader(b []byte) error {
	if len(b) < headerLen {
		return io.ErrUnexpectedEOF
	}
	if string(b[0:4]) != magicValue {
		return ErrMagic
	}
	if b[4] != Version {
		return fmt.Errorf("%w %d", ErrVersion, b[4])
	}
	if b[5] != typeBeat {
		return fmt.Errorf("%w %d", ErrType, b[5])
	}
	if len(b) < FrameLen {
		return io.ErrUnexpectedEOF
	}
	if len(b) > FrameLen {
		return ErrLength
	}
	return nil
}

// UnmarshalBinary decodes b without checking its MAC (see Signer.Verify).
func (f *Frame) UnmarshalBinary(b []byte) error {
	if err := checkHeader(b); err != nil {
		return err
	}
	f.Flags = Flags(binary.BigEndian.Uint16(b[6:8]))
	f.Cluster = binary.BigEndian.Uint32(b[8:12])
	f.Node = b[12]
	f.Role = Role(b[13])
	f.Path = b[14]
	f.Dead = getDead(b[15])
	f.Key = binary.BigEndian.Uint32(b[16:20])
	for i := range f.Held {
		f.Held[i] = binary.BigEndian.Uint32(b[20+4*i:])
	}
	f.Generation = binary.BigEndian.Uint64(b[32:40])
	f.Seq = binary.BigEndian.Uint64(b[40:48])
	f.ActiveFor = getAge(b[48:56])
	f.LastNewSession = getAge(b[56:64])
	f.SyncWritten = binary.BigEndian.Uint64(b[64:72])
	f.SyncAcked = binary.BigEndian.Uint64(b[72:80])
	f.EchoGeneration = binary.BigEndian.Uint64(b[80:88])
	f.EchoSeq = binary.BigEndian.Uint64(b[88:96])
	copy(f.MAC[:], b[macOffset:FrameLen])
	return nil
}

// Fingerprint names a key on the wire without revealing it: the first four
// bytes of SHA-256 over a label and the key, never zero (zero marks an
// empty slot in Frame.Held).
func Fingerprint(key []byte) uint32 {
	h := sha256.New()
	h.Write([]byte("hapair key fingerprint\x00"))
	h.Write(key)
	fp := binary.BigEndian.Uint32(h.Sum(nil))
	if fp == 0 {
		fp = 1
	}
	return fp
}

// Fingerprints are keys' fingerprints, in their order.
func Fingerprints(keys [][]byte) []uint32 {
	fps := make([]uint32, 0, len(keys))
	for _, k := range keys {
		fps = append(fps, Fingerprint(k))
	}
	return fps
}

// FormatFingerprints writes fingerprints as hapaird --check and the logs
// show them, leaving out empty slots (zero, in Frame.Held).
func FormatFingerprints(fps []uint32) string {
	var out []string
	for _, fp := range fps {
		if fp != 0 {
			out = append(out, fmt.Sprintf("%08x", fp))
		}
	}
	return strings.Join(out, " ")
}

// Signer signs with one of its keys and verifies with the key a frame
// names. It reuses its HMAC states, so it is not safe for concurrent use.
type Signer struct {
	keys []signKey
	held [HeldKeys]uint32
	sum  [sha256.Size]byte
	// in is what Verify hashes: a frame handed to the hash (an
	// interface) would escape, and the core's every received frame with
	// it, a heap allocation each.
	in [macOffset]byte
}

type signKey struct {
	fp  uint32
	mac hash.Hash
}

// NewSigner keeps keys, newest first (the configured order).
func NewSigner(keys [][]byte) (*Signer, error) {
	if len(keys) == 0 || len(keys) > 255 {
		return nil, errors.New("heartbeat: need 1 to 255 keys")
	}
	s := &Signer{}
	for i, k := range keys {
		fp := Fingerprint(k)
		for _, o := range s.keys {
			if o.fp == fp {
				return nil, fmt.Errorf("heartbeat: key %d repeats an earlier key (fingerprint %08x)", i+1, fp)
			}
		}
		s.keys = append(s.keys, signKey{fp: fp, mac: hmac.New(sha256.New, k)})
		if i < HeldKeys {
			s.held[i] = fp
		}
	}
	return s, nil
}

// Keys is how many keys the signer holds.
func (s *Signer) Keys() int { return len(s.keys) }

// Held are the fingerprints a frame advertises.
func (s *Signer) Held() [HeldKeys]uint32 { return s.held }

// Choose picks the key to sign with for a peer that holds peerHeld: the
// newest of ours that it holds. ok is false when it holds none of ours.
func (s *Signer) Choose(peerHeld [HeldKeys]uint32) (key int, ok bool) {
	for i, k := range s.keys {
		for _, p := range peerHeld {
			if p != 0 && p == k.fp {
				return i, true
			}
		}
	}
	return 0, false
}

// AppendFrame appends f, signed with keys[key], to dst. It sets f.Key and
// f.Held.
func (s *Signer) AppendFrame(dst []byte, f *Frame, key int) []byte {
	k := s.keys[key]
	f.Key, f.Held = k.fp, s.held
	n := len(dst)
	dst = append(dst, make([]byte, FrameLen)...)
	b := dst[n:]
	f.put(b)
	k.mac.Reset()
	k.mac.Write(b[:macOffset])
	copy(b[macOffset:], k.mac.Sum(s.sum[:0]))
	return dst
}

// errKeyID is returned by Verify for a key this node does not hold.
var errKeyID = errors.New("heartbeat: unknown key")

// Verify checks b's MAC with the key its header names. b must have passed
// checkHeader.
func (s *Signer) Verify(b []byte) (bool, error) {
	fp := binary.BigEndian.Uint32(b[16:20])
	for _, k := range s.keys {
		if k.fp == fp {
			k.mac.Reset()
			k.mac.Write(s.in[:copy(s.in[:], b[:macOffset])])
			return hmac.Equal(k.mac.Sum(s.sum[:0]), b[macOffset:FrameLen]), nil
		}
	}
	return false, errKeyID
}
