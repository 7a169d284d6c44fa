package heartbeat

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"
)

// EtherType is IEEE 802 Local Experimental EtherType 1: for protocols that
// never leave a site's own links, as a dedicated heartbeat link is.
const EtherType = 0x88B5

// Wire constants.
const (
	FrameLen   = 96
	Version    = 1
	typeBeat   = 1
	macOffset  = 64
	noAge      = ^uint64(0)
	headerLen  = 6
	magicValue = "HPHB"
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

func (r Role) String() string {
	switch r {
	case RoleInit:
		return "init"
	case RoleStandby:
		return "standby"
	case RoleActive:
		return "active"
	case RoleFault:
		return "fault"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// Flags are the sender's attributes.
type Flags uint16

// Flag bits.
const (
	FlagLocked Flags = 1 << iota
	FlagFault
	FlagLeaving
	FlagSplitBrain
	FlagPreferred
)

// Frame is one heartbeat.
type Frame struct {
	Flags   Flags
	Cluster uint32
	Node    uint8
	Role    Role
	KeyID   uint8
	// Path is the index of the path the frame was sent on: each path
	// has its own replay window, so the copy of a frame on the second
	// path is not taken for a replay, and a copy cannot be moved to
	// another path.
	Path       uint8
	Generation uint64
	Seq        uint64
	// ActiveFor and LastNewSession are ages at the time of sending; a
	// negative value means "not active" and "no new session" respectively.
	ActiveFor      time.Duration
	LastNewSession time.Duration
	SyncWritten    uint64
	SyncAcked      uint64
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
	b[14] = f.KeyID
	b[15] = f.Path
	binary.BigEndian.PutUint64(b[16:24], f.Generation)
	binary.BigEndian.PutUint64(b[24:32], f.Seq)
	putAge(b[32:40], f.ActiveFor)
	putAge(b[40:48], f.LastNewSession)
	binary.BigEndian.PutUint64(b[48:56], f.SyncWritten)
	binary.BigEndian.PutUint64(b[56:64], f.SyncAcked)
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
	f.KeyID = b[14]
	f.Path = b[15]
	f.Generation = binary.BigEndian.Uint64(b[16:24])
	f.Seq = binary.BigEndian.Uint64(b[24:32])
	f.ActiveFor = getAge(b[32:40])
	f.LastNewSession = getAge(b[40:48])
	f.SyncWritten = binary.BigEndian.Uint64(b[48:56])
	f.SyncAcked = binary.BigEndian.Uint64(b[56:64])
	copy(f.MAC[:], b[macOffset:FrameLen])
	return nil
}

// Signer signs with the first key and verifies with any. It reuses its
// HMAC states, so it is not safe for concurrent use.
type Signer struct {
	macs []hash.Hash
	sum  [sha256.Size]byte
}

// NewSigner keeps keys; keys[0] signs.
func NewSigner(keys [][]byte) (*Signer, error) {
	if len(keys) == 0 || len(keys) > 255 {
		return nil, errors.New("heartbeat: need 1 to 255 keys")
	}
	s := &Signer{}
	for _, k := range keys {
		s.macs = append(s.macs, hmac.New(sha256.New, k))
	}
	return s, nil
}

// AppendFrame appends f, signed with key 0, to dst.
func (s *Signer) AppendFrame(dst []byte, f *Frame) []byte {
	f.KeyID = 0
	n := len(dst)
	dst = append(dst, make([]byte, FrameLen)...)
	b := dst[n:]
	f.put(b)
	m := s.macs[0]
	m.Reset()
	m.Write(b[:macOffset])
	copy(b[macOffset:], m.Sum(s.sum[:0]))
	return dst
}

// errKeyID is returned by Verify for a key id this node does not hold.
var errKeyID = errors.New("heartbeat: unknown key id")

// Verify checks b's MAC with the key its header names. b must have passed
// checkHeader.
func (s *Signer) Verify(b []byte) (bool, error) {
	id := int(b[14])
	if id >= len(s.macs) {
		return false, errKeyID
	}
	m := s.macs[id]
	m.Reset()
	m.Write(b[:macOffset])
	return hmac.Equal(m.Sum(s.sum[:0]), b[macOffset:FrameLen]), nil
}
