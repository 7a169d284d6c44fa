package config

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestFileKeys(t *testing.T) {
	dir := t.TempDir()
	write := func(src string) map[string]uint64 {
		t.Helper()
		p := filepath.Join(dir, "hapair.toml")
		if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		sums, err := FileKeys(p)
		if err != nil {
			t.Fatal(err)
		}
		return sums
	}
	base := write("cluster = \"c\"\nprofile = \"default\"\n\n[[vip]]\naddress = \"192.0.2.100/24\"\n\n[announce]\ncount = 3\nspacing = \"20ms\"\n")
	// Comments, blank lines and the order within a table change nothing.
	same := write("# edited\nprofile = \"default\"   # still\ncluster = \"c\"\n[[vip]]\naddress = \"192.0.2.100/24\"\n[announce]\nspacing = \"20ms\"\ncount = 3\n")
	if d := KeysDiffer(base, same); len(d) != 0 {
		t.Errorf("the same settings differ in %v", d)
	}
	// A VIP added, a key changed, one removed, one added.
	now := write("cluster = \"c\"\nprofile = \"fast\"\nlease = \"20s\"\n\n[[vip]]\naddress = \"192.0.2.100/24\"\n\n[[vip]]\naddress = \"192.0.2.101/24\"\n")
	if d, want := KeysDiffer(base, now), []string{"announce", "lease", "profile", "vip"}; !slices.Equal(d, want) {
		t.Errorf("differ in %v, want %v", d, want)
	}
	if _, err := FileKeys(filepath.Join(dir, "none.toml")); err == nil {
		t.Error("a missing file has sums")
	}
	p := filepath.Join(dir, "bad.toml")
	os.WriteFile(p, []byte("cluster = \"c\nprofile = 1\n"), 0o600)
	if _, err := FileKeys(p); err == nil {
		t.Error("a file that is not TOML has sums")
	}
}
