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

// newFileWatch compares cfg's file with cfg as it was read from it (nil
// when its sums cannot be taken). The file's stamp is not taken now: a
// file replaced since it was read would match it, and its edit would go
// unsaid; the first question reads the file.
func newFileWatch(cfg *config.Config) *fileWatch {
	sums, err := cfg.FileKeys()
	if err != nil {
		return nil
	}
	return &fileWatch{path: cfg.File, start: sums}
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
