package node

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hapair/hapair/vip"
)

func TestVIPRecord(t *testing.T) {
	dir := t.TempDir()
	if got, err := readVIPRecord(dir); got != nil || err != nil {
		t.Fatalf("no record: %v, %v; want nothing and no error", got, err)
	}
	addrs := []vip.Addr{
		{Prefix: netip.MustParsePrefix("192.0.2.100/24"), Interface: "eth0"},
		{Prefix: netip.MustParsePrefix("2001:db8::100/64"), Interface: "bond0.12"},
	}
	if err := writeVIPRecord(dir, addrs); err != nil {
		t.Fatal(err)
	}
	got, err := readVIPRecord(dir)
	if err != nil || len(got) != 2 || got[0] != addrs[0] || got[1] != addrs[1] {
		t.Fatalf("read back %v, %v; want %v", got, err, addrs)
	}
	// The same set is not written again (a file replaced is a new
	// inode): a start on a full disk says nothing of a record that holds.
	path := filepath.Join(dir, vipRecord)
	inode := func() uint64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	before := inode()
	if err := writeVIPRecord(dir, addrs); err != nil || inode() != before {
		t.Fatalf("the same record again: %v, replaced: %v", err, inode() != before)
	}
	if err := writeVIPRecord(dir, addrs[1:]); err != nil || inode() == before {
		t.Fatalf("another record: %v, replaced: %v", err, inode() != before)
	}
	if err := writeVIPRecord(dir, addrs); err != nil {
		t.Fatal(err)
	}
	// A line damaged by hand: the others are still read, the damage named.
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(path, append(b, "192.0.2.300/24 eth0\n2001:db8::1/64\n198.51.100.7/32 eth1 group=b\n"...), 0o640); err != nil {
		t.Fatal(err)
	}
	got, err = readVIPRecord(dir)
	if len(got) != 3 || err == nil || !strings.Contains(err.Error(), path+":5") || !strings.Contains(err.Error(), path+":6") || strings.Contains(err.Error(), path+":7") {
		t.Fatalf("damaged record: %v, %v; want both VIPs, lines 5 and 6 named, line 7 read", got, err)
	}
	// A later version's field after the interface is left alone.
	if want := (vip.Addr{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Interface: "eth1"}); got[2] != want {
		t.Errorf("line 7 read as %v, want %v", got[2], want)
	}
}
