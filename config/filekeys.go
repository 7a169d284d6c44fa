package config

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"slices"

	"github.com/BurntSushi/toml"
)

// FileKeys is a sum of each top-level key's value in the file at path,
// by key, as TOML reads it: comments, blank lines and the order of keys
// within a table change no sum. A daemon keeps its file's sums from its
// start and compares them with the file's now (KeysDiffer): a file
// edited and never applied (a new VIP, a new check) is otherwise silent
// until the next restart, since SIGHUP reloads nothing. The file is read
// leniently: what it means is Load's business.
func FileKeys(path string) (map[string]uint64, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return keysOf(src)
}

// FileKeys is the sums of the file as this configuration was read from it:
// the baseline a daemon compares the file with. Read again after Load, a
// file replaced in between became the baseline, and its edit was never
// said.
func (c *Config) FileKeys() (map[string]uint64, error) { return keysOf(c.src) }

func keysOf(src []byte) (map[string]uint64, error) {
	var top map[string]any
	if _, err := toml.Decode(string(src), &top); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	sums := make(map[string]uint64, len(top))
	for k, v := range top {
		b, err := json.Marshal(v) // maps in key order
		if err != nil {
			return nil, fmt.Errorf("config: %s: %w", k, err)
		}
		h := sha256.Sum256(b)
		sums[k] = binary.BigEndian.Uint64(h[:])
	}
	return sums, nil
}

// KeysDiffer names the top-level keys whose sums differ between two
// FileKeys, added and removed ones included, sorted.
func KeysDiffer(was, now map[string]uint64) []string {
	var differ []string
	for k, s := range was {
		if n, ok := now[k]; !ok || n != s {
			differ = append(differ, k)
		}
	}
	for k := range now {
		if _, ok := was[k]; !ok {
			differ = append(differ, k)
		}
	}
	slices.Sort(differ)
	return differ
}
