package heartbeat

import (
	"encoding/binary"
	"errors"
	"io"
)

// receiver is the pure part of reception: header, MAC, generation and
// replay checks, in that order. It holds no socket and no clock.
type receiver struct {
	cluster uint32
	self    uint8
	signer  *Signer
	// myGen is this node's own generation, which fresh frames echo.
	myGen uint64
	// gen is the peer's current boot generation; windows are per path,
	// since each path numbers its own frames.
	gen     uint64
	windows []Window
	// genSeen says gen was first seen in this boot of ours. Only then can
	// a frame that echoes nothing (its sender has not heard us yet) be
	// trusted: the peer's earlier frames, echoing nothing or an earlier
	// boot of ours, may have been recorded before we started.
	genSeen bool
	// genChanged is set when gen changed and should be persisted.
	genChanged bool
	// genFrom is this node's frame number when gen was first accepted
	// (0: known from before this start).
	genFrom uint64
}

// newReceiver starts with gen, the peer generation known from before this
// start (persisted), as the peer's current one.
func newReceiver(cluster uint32, self uint8, s *Signer, paths int, myGen, gen uint64) *receiver {
	return &receiver{cluster: cluster, self: self, signer: s, windows: make([]Window, paths), myGen: myGen, gen: gen}
}

// check decides on one frame that arrived on path index p; mySeq is the
// number of this node's newest frame.
func (r *receiver) check(b []byte, p int, mySeq uint64, f *Frame) (DropReason, bool) {
	if err := checkHeader(b); err != nil {
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF):
			return DropShort, false
		case errors.Is(err, ErrMagic):
			return DropMagic, false
		case errors.Is(err, ErrVersion):
			return DropVersion, false
		default:
			return DropMalformed, false
		}
	}
	// Cheap header facts first, so frames of another pair on the segment
	// are named as such and never cost an HMAC.
	if f.Cluster = beUint32(b[8:12]); f.Cluster != r.cluster {
		// Another pair's, on a shared segment: unless the peer's node
		// signed it with a key of ours, and runs another cluster name
		// (a change made in one file). Dropped unheard, that peer made
		// a starting node take the VIPs beside it. Only a frame with a
		// key id of ours costs an HMAC.
		if b[12] == r.self {
			return DropCluster, false
		}
		if ok, err := r.signer.Verify(b); err != nil || !ok || f.UnmarshalBinary(b) != nil {
			return DropCluster, false
		}
		return DropPeerCluster, false
	}
	// This node's own frames, come back (a looped segment), are dropped
	// unverified. One of another generation was not sent by this
	// process: verified, it is a twin (DropTwin), reported with f.
	own := b[12] == r.self
	if own && binary.BigEndian.Uint64(b[32:40]) == r.myGen {
		return DropOwnNode, false
	}
	ok, err := r.signer.Verify(b)
	if err != nil {
		// Decoded for the report (Endpoint.unverified), not trusted.
		f.UnmarshalBinary(b)
		return DropKeyID, false
	}
	if !ok {
		return DropMAC, false
	}
	// Authentic from here on.
	if err := f.UnmarshalBinary(b); err != nil {
		return DropMalformed, false
	}
	if own {
		return DropTwin, false
	}
	if int(f.Path) != p || p >= len(r.windows) {
		return DropMalformed, false
	}
	// Freshness: a frame that echoes this boot of ours was sent after we
	// started; one that echoes another of our boots was recorded before.
	fresh := f.EchoGeneration == r.myGen
	switch {
	case f.Generation == r.gen:
		if !fresh && !(f.EchoGeneration == 0 && r.genSeen) {
			return DropStale, false
		}
	case f.Generation > r.gen || fresh:
		// A new boot of the peer; or, echoing us, a peer whose
		// counter went back (its state directory was lost).
		if !fresh && f.EchoGeneration != 0 {
			return DropStale, false
		}
		// A lower generation that echoes us is a peer whose counter
		// went back, or a frame of the boot before its current one
		// read late: an active reads its standby's frames only when
		// it wakes to send, and a standby restarted in between had
		// its new boot's frames read first on the other path. Taken
		// for current, the old boot's last frame (stopping) came
		// back after the new one, and the active degraded sync again
		// beside the new standby. Only a boot after the current one
		// has heard frames of ours sent since that one came. One that
		// echoes no number of ours has accepted none yet: a boot
		// whose counter went back echoes this boot it dropped frames
		// of (staleGen), so each side learns the other is fresh.
		if f.Generation < r.gen && f.EchoSeq != 0 && f.EchoSeq <= r.genFrom {
			return DropOldGeneration, false
		}
		r.gen, r.genSeen, r.genChanged, r.genFrom = f.Generation, true, true, mySeq
		for i := range r.windows {
			r.windows[i].Reset()
		}
	default:
		return DropOldGeneration, false
	}
	if !r.windows[p].Accept(f.Seq) {
		return DropReplay, false
	}
	return 0, true
}

func beUint32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
