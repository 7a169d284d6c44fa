package node

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hapair/hapair/config"
)

// The baseline is the file as the daemon read it. A file replaced between
// the daemon's read and the watch's start (configuration management
// pushing a new file as the daemon starts) is an edit not applied, and
// is said; taken from the file again, it became the baseline.
func TestFileWatchComparesWithTheFileAsRead(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hapair.key"), bytes.Repeat([]byte{'k'}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hapair.toml")
	src, err := os.ReadFile("../config/testdata/good/minimal.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(src, "\n[[vip]]\naddress = \"192.0.2.101/24\"\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	w := newFileWatch(cfg)
	if d, e := w.differs(); !slices.Equal(d, []string{"vip"}) || e != "" {
		t.Errorf("a VIP added after the daemon read the file: differs %v (%q), want [vip]", d, e)
	}
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	if d, e := w.differs(); len(d) != 0 || e != "" {
		t.Errorf("the file as read, put back: differs %v (%q)", d, e)
	}
}
