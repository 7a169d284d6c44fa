package heartbeat

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// NextGeneration raises this node's boot counter, kept in dir (written and
// synced, directory included, before the node sends a frame), and returns
// this start's generation: the counter in the high 32 bits, 32 random bits
// below. The counter orders a peer's boots; the random part makes the
// generation a boot id no one can predict, which the peer echoes in its
// frames (Frame.EchoGeneration), so a frame recorded before this start can
// never pass for one sent to it. No wall clock is involved: a node that
// comes back from a power loss with its clock behind still counts up.
//
// A counter file that holds no number, or a disk too full to take the new
// one, does not keep the node down: an HA agent that will not start
// because /var filled up leaves its pair without a standby. The
// generation returned then comes with degraded, why the counter was not
// recorded. Its peer hears it anyway, as it hears a node whose state
// directory was lost (design-notes.md): what is given up is that the
// peer knows this boot for newer than the last one by its counter alone.
func NextGeneration(dir string) (gen uint64, degraded, err error) {
	path := filepath.Join(dir, "generation")
	prev, err := readUint(path)
	if errors.Is(err, strconv.ErrSyntax) || errors.Is(err, strconv.ErrRange) {
		degraded, prev = err, 0
	} else if err != nil {
		return 0, nil, err
	}
	// Before the counter, the file held the Unix time in seconds, which
	// fits in 32 bits and counts on from there.
	counter := (prev + 1) & 0xffffffff
	if counter == 0 {
		counter = 1
	}
	if err := writeUint(path, counter); errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		degraded = err
	} else if err != nil {
		return 0, nil, err
	}
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return 0, nil, err
	}
	return counter<<32 | uint64(binary.BigEndian.Uint32(r[:])), degraded, nil
}

// peerGenerations remembers the highest generation seen from the peer in
// dir, so a receiver restarted with its state keeps dropping frames
// recorded before the peer's last restart. An empty dir keeps it in memory.
type peerGenerations struct {
	path string
}

func (p peerGenerations) load() (uint64, error) {
	if p.path == "" {
		return 0, nil
	}
	g, err := readUint(p.path)
	if errors.Is(err, strconv.ErrSyntax) || errors.Is(err, strconv.ErrRange) {
		// Damaged: as if lost, which the receiver recovers from.
		return 0, nil
	}
	return g, err
}

func (p peerGenerations) store(g uint64) error {
	if p.path == "" {
		return nil
	}
	return writeUint(p.path, g)
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("heartbeat: %w", err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("heartbeat: %s: %w", path, err)
	}
	return v, nil
}

// writeUint replaces path atomically: a crash mid-write must not leave a
// generation file that reads as 0.
func writeUint(path string, v uint64) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	_, err = f.WriteString(strconv.FormatUint(v, 10) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		// The rename itself must survive a power loss.
		var d *os.File
		if d, err = os.Open(filepath.Dir(path)); err == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}
