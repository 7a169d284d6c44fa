package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/hapair/hapair/config"
	"github.com/hapair/hapair/vip"
	"golang.org/x/sys/unix"
)

// lockPath is the node's instance lock, beside its socket.
func lockPath(cfg *config.Config) string {
	return filepath.Join(filepath.Dir(cfg.Socket), "hapaird.lock")
}

// instanceLock takes the per-node runtime lock; a second daemon (or a
// --cleanup while the daemon runs) fails here. The heartbeat core holds
// it too (StartCore), for as long as it outlives a dead agent to hand
// over: two dead intervals at most, which a daemon started at once after
// a crash waits out (without it, its core failed to bind the heartbeat
// address the old core still held).
func instanceLock(cfg *config.Config) (*os.File, error) {
	dir := filepath.Dir(cfg.Socket)
	// Traversable for group hapair, whose members use the socket (0660).
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(lockPath(cfg), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, err
	}
	wait := time.Now().Add(2*cfg.DeadInterval + time.Second)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		if time.Now().After(wait) {
			f.Close()
			return nil, fmt.Errorf("another hapaird is running for this node (lock %s held)", f.Name())
		}
		time.Sleep(10 * time.Millisecond) // a poll within the bound: flock has no timeout
	}
	f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return f, nil
}

func vipManager(cfg *config.Config, self *config.Node) (*vip.Manager, error) {
	return vip.New(configuredVIPs(cfg, self), vip.Options{Lease: cfg.Lease, Count: cfg.GARPCount, Spacing: cfg.GARPSpacing})
}

// configuredVIPs are the config's VIPs on self's interfaces.
func configuredVIPs(cfg *config.Config, self *config.Node) []vip.Addr {
	var addrs []vip.Addr
	for _, v := range cfg.VIPs {
		addrs = append(addrs, vip.Addr{Prefix: v.Prefix, Interface: v.VIPInterface(self)})
	}
	return addrs
}

// Cleanup releases every VIP of the config this node holds, and those
// the last run recorded (vipRecord), for a daemon that is not running
// (ExecStopPost); it fails while one runs. It returns what it removed,
// and apart, what of the record it could not read (lines edited by hand:
// the rest was released).
func Cleanup(cfg *config.Config, self *config.Node) (removed []vip.Addr, record, err error) {
	return cleanup(cfg, configuredVIPs(cfg, self))
}

// CleanupRecorded releases the VIPs the last run recorded in stateDir,
// for a daemon that is not running, when the config no longer loads:
// socket and stateDir are then what a lenient read of it found
// (config.Paths). The dead interval is not known either: a core still
// handing over is waited for as at a dead interval of 2 s, longer than
// every profile's (a dead_interval set longer is rare).
func CleanupRecorded(socket, stateDir string) (removed []vip.Addr, record, err error) {
	return cleanup(&config.Config{Socket: socket, StateDir: stateDir, DeadInterval: 2 * time.Second}, nil)
}

func cleanup(cfg *config.Config, configured []vip.Addr) (removed []vip.Addr, record, err error) {
	lock, err := instanceLock(cfg)
	if err != nil {
		return nil, nil, err
	}
	defer lock.Close()
	recorded, record := readVIPRecord(cfg.StateDir)
	m, err := vip.New(configured, vip.Options{})
	if err != nil {
		return nil, record, err
	}
	defer m.Close()
	removed, err = m.Cleanup(recorded...)
	return removed, record, err
}

// DaemonRunning says whether a hapaird holds the node's instance lock: the
// node's daemon, or its heartbeat core still handing over. It takes the
// lock for an instant to tell, and gives it back; err when it cannot tell
// (a lock file it may not open).
func DaemonRunning(cfg *config.Config) (bool, error) {
	f, err := os.Open(lockPath(cfg))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // no daemon ever ran here
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return true, nil
	}
	return false, err
}
