package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hapair/hapair/config"
	"github.com/hapair/hapair/vip"
	"golang.org/x/sys/unix"
)

// instanceLock takes the per-node runtime lock; a second daemon (or a
// --cleanup while the daemon runs) fails here.
func instanceLock(cfg *config.Config) (*os.File, error) {
	dir := filepath.Dir(cfg.Socket)
	// Traversable for group hapair, whose members use the socket (0660).
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "hapaird.lock"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another hapaird is running for this node (lock %s held)", f.Name())
		}
		return nil, err
	}
	f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return f, nil
}

func vipManager(cfg *config.Config, self *config.Node) (*vip.Manager, error) {
	var addrs []vip.Addr
	for _, v := range cfg.VIPs {
		addrs = append(addrs, vip.Addr{Prefix: v.Prefix, Interface: v.VIPInterface(self)})
	}
	return vip.New(addrs, vip.Options{Lease: cfg.Lease, Count: cfg.GARPCount, Spacing: cfg.GARPSpacing})
}

// Cleanup releases every VIP of the config this node holds, for a daemon
// that is not running (ExecStopPost); it fails while one runs. It returns
// what it removed.
func Cleanup(cfg *config.Config, self *config.Node) ([]vip.Addr, error) {
	lock, err := instanceLock(cfg)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	m, err := vipManager(cfg, self)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return m.Cleanup()
}
