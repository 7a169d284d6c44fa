package node

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/hapair/hapair/vip"
)

// vipRecord, in the state directory, names the VIPs this node's daemon
// may hold: written at each start, before any claim, and read by every
// cleanup beside the configuration. An edit that takes a VIP out of the
// file (another address, interface or prefix) is read by the next
// cleanup, not by the daemon that holds the old one: after a crash, the
// old VIP would stay until its kernel lease ran out, beside the peer that
// took it over. So would every VIP after a crash with a file that no
// longer loads, as ExecStopPost then could not tell what to release.
const vipRecord = "vips"

// readVIPRecord reads the record in dir; none is no error (a node's
// first start, or a state directory lost). A line it cannot read is an
// error, and the lines it could read are still returned.
func readVIPRecord(dir string) ([]vip.Addr, error) {
	path := filepath.Join(dir, vipRecord)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var addrs []vip.Addr
	var errs []error
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// Fields after the interface are a later version's (a VIP's
		// group, say): a downgraded daemon still releases the VIP.
		f := strings.Fields(line)
		var pr netip.Prefix
		err := fmt.Errorf("no interface")
		if len(f) >= 2 {
			pr, err = netip.ParsePrefix(f[0])
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %q is not a VIP and its interface", path, i+1, line))
			continue
		}
		addrs = append(addrs, vip.Addr{Prefix: pr, Interface: f[1]})
	}
	return addrs, errors.Join(errs...)
}

// writeVIPRecord replaces the record in dir with addrs, unless it says
// that already. Atomically, by a rename, and not synced: it matters only
// across a crash of the daemon, which the page cache outlives, while a
// host that loses its power loses the addresses too.
func writeVIPRecord(dir string, addrs []vip.Addr) error {
	var b bytes.Buffer
	b.WriteString("# The VIPs hapaird may hold on this node, written at its start; every\n# cleanup (ExecStopPost, the next start) releases them beside the config's.\n")
	for _, a := range addrs {
		fmt.Fprintf(&b, "%s %s\n", a.Prefix, a.Interface)
	}
	path := filepath.Join(dir, vipRecord)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b.Bytes()) {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o640); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
