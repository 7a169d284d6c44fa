package lockfile

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteReadRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "locked")
	if s := Read(path); s.Locked || s.Err != nil {
		t.Fatalf("no file: %+v", s)
	}
	if err := Write(path, "locked by ops: maintenance\n"); err != nil {
		t.Fatal(err)
	}
	if s := Read(path); !s.Locked || s.Info != "locked by ops: maintenance\n" {
		t.Fatalf("after Write: %+v", s)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".locked-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := Remove(path); err != nil {
		t.Fatalf("removing a lock that is not there: %v", err)
	}
	if s := Read(path); s.Locked {
		t.Fatalf("after Remove: %+v", s)
	}
}

// A lock file that exists but cannot be read counts as locked, with the
// reason, never as unlocked.
func TestUnreadableCountsAsLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locked")
	os.Mkdir(path, 0o755) // reading a directory fails (EISDIR), for root too
	s := Read(path)
	if !s.Locked || s.Err == nil {
		t.Fatalf("unreadable lock file: %+v", s)
	}
}

// A change made by other means (an editor, a config management run, the
// CLI with the daemon down) is noticed at once, by event.
func TestWatchSeesChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locked")
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan struct{}, 16)
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watch(ctx, path, time.Hour, func(err error) { started <- err }, func() { changed <- struct{}{} })
	}()
	if err := <-started; err != nil {
		t.Fatalf("inotify: %v", err)
	}
	wait := func(what string) {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(5 * time.Second):
			t.Fatalf("no change seen after %s", what)
		}
	}
	wait("the watch began") // the call for what changed before
	os.WriteFile(filepath.Join(filepath.Dir(path), "unrelated"), nil, 0o644)
	select {
	case <-changed:
		t.Fatal("a change to another file was reported")
	case <-time.After(100 * time.Millisecond):
	}
	if err := Write(path, "x"); err != nil {
		t.Fatal(err)
	}
	wait("Write")
	for len(changed) > 0 {
		<-changed
	}
	os.Remove(path)
	wait("rm")
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return when its context ended")
	}
}
