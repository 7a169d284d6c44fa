package config

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// What the two nodes compare: a change to a pair section is named, one to
// what may differ between hosts is not, and the order of a list that
// means the same in any order does not count.
func TestPairDiffers(t *testing.T) {
	base, err := os.ReadFile("testdata/good/minimal.toml")
	if err != nil {
		t.Fatal(err)
	}
	base = append(base, `
[[vip]]
address = "192.0.2.101/24"

[[check]]
name = "media"
kind = "process"
target = "/run/media-{node}.pid"
`...)
	dir := keyDir(t)
	parse := func(src string) map[string]uint64 {
		t.Helper()
		c, err := parseIn(t, dir, []byte(src))
		if err != nil {
			t.Fatalf("%v\n%s", err, src)
		}
		return c.PairSums()
	}
	mine := parse(string(base))
	for _, tc := range []struct {
		name, old, new string
		want           []string
	}{
		{"the same file", "", "", nil},
		{"a VIP missing", "[[vip]]\naddress = \"192.0.2.101/24\"\n", "", []string{"[[vip]]"}},
		{"a VIP on another interface", "address = \"192.0.2.101/24\"\n", "address = \"192.0.2.101/24\"\ninterface = \"pub1\"\n", []string{"[[vip]]"}},
		{"the VIPs in another order", "address = \"192.0.2.100/24\"", "address = \"192.0.2.1XX/24\"", nil},
		{"another primary", `primary = "alpha"`, `primary = "beta"`, []string{"primary"}},
		{"a node's address", `replication_address = "198.51.100.2"`, `replication_address = "198.51.100.3"`, []string{"[[node]]"}},
		{"sync mode", `profile = "default"`, "profile = \"default\"\nsync_mode = \"sync\"", []string{"sync_mode and [sessions]"}},
		{"a lease", `profile = "default"`, "profile = \"default\"\nlease = \"20s\"", []string{"lease, hold_down and [announce]"}},
		{"a check's target", "media-{node}", "media", []string{"[[check]]"}},
		{"a hook", "", "\n[[hook]]\non = [\"active\"]\ncommand = [\"/bin/true\"]\n", []string{"[[hook]]"}},
		{"two sections", `primary = "alpha"`, "primary = \"beta\"\nsync_mode = \"sync\"", []string{"primary", "sync_mode and [sessions]"}},
		// Where each host keeps its files, and what each node serves
		// on, are its own.
		{"paths and listeners", `profile = "default"`, "profile = \"default\"\nstate_dir = \"/srv/hapair\"\nsocket = \"/srv/hapair/hapair.sock\"\n[metrics]\nlisten = \"127.0.0.1:9405\"", nil},
		// The heartbeat timers are compared by the frames.
		{"the profile", `profile = "default"`, `profile = "fast"`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := string(base)
			switch {
			case tc.name == "the VIPs in another order":
				// Swap the two VIPs' addresses.
				src = strings.Replace(src, "192.0.2.100/24", "192.0.2.1XX/24", 1)
				src = strings.Replace(src, "192.0.2.101/24", "192.0.2.100/24", 1)
				src = strings.Replace(src, "192.0.2.1XX/24", "192.0.2.101/24", 1)
			case tc.old == "":
				src += tc.new
			default:
				if !strings.Contains(src, tc.old) {
					t.Fatalf("%q not in the file", tc.old)
				}
				src = strings.Replace(src, tc.old, tc.new, 1)
			}
			peer := parse(src)
			if got := PairDiffers(mine, peer); !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if got := PairDiffers(peer, mine); !slices.Equal(got, tc.want) {
				t.Errorf("the other way round: got %q, want %q", got, tc.want)
			}
		})
	}
}

// A section only one side sends (an older or a later version) is not
// compared.
func TestPairDiffersComparesOnlyWhatBothSend(t *testing.T) {
	mine := map[string]uint64{"vip": 1, "node": 2}
	if got := PairDiffers(mine, map[string]uint64{"node": 2, "later": 9}); got != nil {
		t.Errorf("got %q, want nothing", got)
	}
	if got := PairDiffers(mine, nil); got != nil {
		t.Errorf("no sums: got %q, want nothing", got)
	}
}
