package config

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// keyDir makes a directory holding the key files the catalogue refers to.
// Git does not keep file modes, so the keys are written here, not shipped.
func keyDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, n int, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), bytes.Repeat([]byte{'k'}, n), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, name), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("hapair.key", 32, 0o600)
	write("short.key", 16, 0o600)
	write("open.key", 32, 0o644)
	return dir
}

func parseIn(t *testing.T, dir string, src []byte) (*Config, error) {
	t.Helper()
	return Parse(filepath.Join(dir, "hapair.toml"), src)
}

// TestBadCatalogue runs every file under testdata/bad: each must fail with
// exactly the messages listed in its "# want:" lines, in order.
func TestBadCatalogue(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Fatalf("catalogue has %d cases, want at least 30", len(files))
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".toml"), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, l := range strings.Split(string(src), "\n") {
				if w, ok := strings.CutPrefix(l, "# want: "); ok {
					want = append(want, w)
				}
			}
			dir := keyDir(t)
			_, err = parseIn(t, dir, src)
			if err == nil {
				t.Fatalf("accepted; want %q", want)
			}
			got := strings.Split(strings.ReplaceAll(err.Error(), dir+"/", ""), "\n")
			for i := range want {
				want[i] = strings.ReplaceAll(want[i], "$DIR/", "")
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("errors:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(want, "\n      "))
			}
		})
	}
}

func TestGoodConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/good/*.toml")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := parseIn(t, keyDir(t), src); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDefaultsAndProfiles(t *testing.T) {
	src, _ := os.ReadFile("testdata/good/minimal.toml")
	c, err := parseIn(t, keyDir(t), src)
	if err != nil {
		t.Fatal(err)
	}
	if c.Interval != 100*time.Millisecond || c.DeadInterval != 300*time.Millisecond {
		t.Errorf("default profile = %v/%v, want 100ms/300ms", c.Interval, c.DeadInterval)
	}
	if c.Lease != DefaultLease || c.SyncMode != "async" || c.Socket != DefaultSocket || c.GARPCount != DefaultGARPCount || c.VIPProbe != DefaultVIPProbe {
		t.Errorf("defaults not applied: %+v", c)
	}
	if c.Nodes[0].ID != 1 || c.Nodes[1].ID != 2 || c.Primary != "alpha" {
		t.Errorf("node ids or primary wrong: %+v %q", c.Nodes, c.Primary)
	}
	if len(c.Keys) != 1 || len(c.Keys[0]) != 32 {
		t.Errorf("key not loaded: %d keys", len(c.Keys))
	}

	src, _ = os.ReadFile("testdata/good/ipv6-and-fast.toml")
	c, err = parseIn(t, keyDir(t), src)
	if err != nil {
		t.Fatal(err)
	}
	if c.Interval != 9*time.Millisecond || c.DeadInterval != 27*time.Millisecond {
		t.Errorf("fast profile = %v/%v, want 9ms/27ms", c.Interval, c.DeadInterval)
	}
	if len(c.VIPs) != 2 || !c.VIPs[1].Prefix.Addr().Is6() {
		t.Errorf("VIPs = %+v", c.VIPs)
	}
}

// hold_down defaults to five dead intervals, at least 2s; "0s" turns it
// off.
func TestHoldDown(t *testing.T) {
	min, _ := os.ReadFile("testdata/good/minimal.toml")
	for _, c := range []struct {
		set  string
		want time.Duration
	}{
		{"", DefaultHoldDown},
		{"dead_interval = \"1s\"\ninterval = \"200ms\"\n", 5 * time.Second},
		{"hold_down = \"0s\"\n", 0},
		{"hold_down = \"10s\"\n", 10 * time.Second},
	} {
		cfg, err := parseIn(t, keyDir(t), append([]byte(c.set), min...))
		if err != nil {
			t.Fatalf("%q: %v", c.set, err)
		}
		if cfg.HoldDown != c.want {
			t.Errorf("%q: hold_down %v, want %v", c.set, cfg.HoldDown, c.want)
		}
	}
}

func TestSyntaxErrorIsPositioned(t *testing.T) {
	src := []byte("cluster = \"pbx\"\nkey_file = \"hapair.key\"\nprofile = \"fast\n")
	_, err := parseIn(t, keyDir(t), src)
	if err == nil || !strings.HasPrefix(err.Error(), filepath.Join("", "")) || !strings.Contains(err.Error(), "hapair.toml:3:") {
		t.Fatalf("got %v, want an error at hapair.toml:3", err)
	}
}

func TestTypeErrorIsPositioned(t *testing.T) {
	src, _ := os.ReadFile("testdata/good/minimal.toml")
	src = bytes.Replace(src, []byte(`profile = "default"`), []byte(`heartbeat_port = "7405"`), 1)
	_, err := parseIn(t, keyDir(t), src)
	if err == nil || !strings.Contains(err.Error(), "hapair.toml:4:") || !strings.Contains(err.Error(), "heartbeat_port") {
		t.Fatalf("got %v, want an error at hapair.toml:4 naming heartbeat_port", err)
	}
}

func TestFindSelf(t *testing.T) {
	src, _ := os.ReadFile("testdata/good/minimal.toml")
	c, err := parseIn(t, keyDir(t), src)
	if err != nil {
		t.Fatal(err)
	}
	ip := func(s string) []netipAddr { return []netipAddr{mustAddr(s)} }
	for _, tc := range []struct {
		flag, host string
		local      []netipAddr
		want, rule string
	}{
		{"beta", "alpha", nil, "beta", "--node beta"},
		{"", "alpha", nil, "alpha", "hostname alpha"},
		{"", "box", ip("198.51.100.2"), "beta", "local address of beta"},
		{"", "box", ip("192.0.2.11"), "alpha", "local address of alpha"},
		{"", "box", ip("203.0.113.9"), "", ""},
		{"gamma", "alpha", nil, "", ""},
	} {
		n, rule, err := c.FindSelf(tc.flag, tc.host, tc.local)
		if tc.want == "" {
			if err == nil {
				t.Errorf("FindSelf(%q, %q, %v) = %s, want an error", tc.flag, tc.host, tc.local, n.Name)
			}
			continue
		}
		if err != nil || n.Name != tc.want || rule != tc.rule {
			t.Errorf("FindSelf(%q, %q, %v) = %v, %q, %v; want %s by %q", tc.flag, tc.host, tc.local, n, rule, err, tc.want, tc.rule)
		}
	}
}

type netipAddr = netip.Addr

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
