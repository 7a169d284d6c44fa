package heartbeat

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// NextGeneration raises this node's boot generation, kept in dir, and
// returns it. It never goes below the Unix time in seconds, so a node whose
// state directory was wiped still starts above its last generation, and its
// peer, which remembers the highest generation it saw, keeps listening.
func NextGeneration(dir string) (uint64, error) {
	path := filepath.Join(dir, "generation")
	prev, err := readUint(path)
	if err != nil {
		return 0, err
	}
	g := max(prev+1, uint64(time.Now().Unix()))
	if err := writeUint(path, g); err != nil {
		return 0, err
	}
	return g, nil
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
	return readUint(p.path)
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
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}
