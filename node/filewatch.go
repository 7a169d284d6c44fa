package node

import (
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hapair/hapair/config"
)

// fileWatch says which top-level keys of the configuration file differ
// from what this daemon read at its start: edited and never applied, a
// file is otherwise silent until the next restart, as SIGHUP reloads
// nothing (a reload is designed for, not built). Status asks it, off the
// agent's loop (a read on a busy disk must not hold the loop that renews
// the core's lease), and it reads the file again only when the file's
// inode, size or time changed.
type fileWatch struct {
	path  string
	start map[string]uint64

	mu     sync.Mutex
	stamp  fileStamp
	differ []string
	err    string
}

type fileStamp struct {
	ino, size int64
	mtime     time.Time
}

// newFileWatch reads path's sums now; nil when it cannot (the daemon
// loaded it a moment ago, so only a file replaced in between).
func newFileWatch(path string) *fileWatch {
	sums, err := config.FileKeys(path)
	if err != nil {
		return nil
	}
	w := &fileWatch{path: path, start: sums}
	w.stamp, _ = stampOf(path)
	return w
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = int64(s.Ino)
	}
	return st, nil
}

// differs names the keys that differ now, or why the file cannot be
// compared.
func (w *fileWatch) differs() ([]string, string) {
	if w == nil {
		return nil, ""
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	st, err := stampOf(w.path)
	if err != nil {
		w.stamp, w.differ, w.err = fileStamp{}, nil, err.Error()
		return nil, w.err
	}
	if st != w.stamp {
		w.stamp, w.differ, w.err = st, nil, ""
		if now, err := config.FileKeys(w.path); err != nil {
			w.err = err.Error()
		} else {
			w.differ = config.KeysDiffer(w.start, now)
		}
	}
	return w.differ, w.err
}
