// Package lockfile keeps a node's HA lock (design.md section 5) in a file,
// so it survives restarts and reboots and can be set while the daemon is
// down. The file's existence means locked; its text says who, when and why.
// Writes are atomic and durable (a temporary file, fsync, rename, fsync of
// the directory): a lock an operator was told is set must still be set
// after a power loss.
package lockfile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// State is what the file says.
type State struct {
	Locked bool
	Info   string // the file's text
	// Err is set when the file exists but cannot be read: that counts
	// as locked, since a lock that might be there must be honoured.
	Err error
}

// Read reads the lock file at path.
func Read(path string) State {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		return State{Locked: true, Info: string(b)}
	case errors.Is(err, os.ErrNotExist):
		return State{}
	default:
		return State{Locked: true, Info: "lock file unreadable: " + err.Error(), Err: err}
	}
}

// Write sets the lock with text.
func Write(path, text string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".locked-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o640); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.WriteString(text); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// Remove clears the lock; a lock that is not there is cleared.
func Remove(path string) error {
	if err := os.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Watch calls changed whenever the lock file at path may have changed: it
// watches the file's directory with inotify (the file is replaced by a
// rename, so the file itself cannot be watched). It returns when ctx ends.
// It calls changed once as soon as the watch runs, for what changed before.
// started learns whether inotify runs (nil) or why not; then Watch falls
// back to calling changed every fallback.
func Watch(ctx context.Context, path string, fallback time.Duration, started func(error), changed func()) {
	fd, err := watchDir(filepath.Dir(path))
	started(err)
	if err != nil {
		t := time.NewTicker(fallback)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				changed()
			}
		}
	}
	f := os.NewFile(uintptr(fd), "inotify")
	go func() {
		<-ctx.Done()
		f.Close() // unblocks the read
	}()
	// Whatever changed before the watch began.
	changed()
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	name := filepath.Base(path)
	for {
		n, err := f.Read(buf)
		if err != nil {
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 || cString(nameBytes) == name {
				changed()
			}
		}
	}
}

func watchDir(dir string) (int, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return -1, err
	}
	// Non-blocking, so os.NewFile puts it in the runtime's poller and
	// Close unblocks a Read.
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return -1, fmt.Errorf("inotify: %w", err)
	}
	mask := uint32(unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_CLOSE_WRITE | unix.IN_ATTRIB)
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("inotify on %s: %w", dir, err)
	}
	return fd, nil
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
