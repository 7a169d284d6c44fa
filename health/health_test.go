package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func start(t *testing.T, cfgs ...Config) *Monitor {
	t.Helper()
	m, err := New(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return m
}

func expect(t *testing.T, m *Monitor, healthy bool, within time.Duration) Event {
	t.Helper()
	select {
	case ev := <-m.Events():
		if ev.Healthy != healthy {
			t.Fatalf("got %+v, want healthy=%v", ev, healthy)
		}
		return ev
	case <-time.After(within):
		t.Fatalf("no change to healthy=%v within %v; states %+v", healthy, within, m.States())
	}
	return Event{}
}

// passing waits until every check of m has passed a sample: the state a
// test then breaks is one the monitor has seen whole.
func passing(t *testing.T, m *Monitor) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		ok := true
		for _, st := range m.States() {
			ok = ok && st.Detail == "ok"
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("checks never passed: %+v", m.States())
		}
	}
}

// runWatched starts a stand-in media server (it only sleeps) with its pid
// in pidfile, ended when the test ends.
func runWatched(t *testing.T, pidfile string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	os.WriteFile(pidfile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	return cmd
}

func TestProcessDeathSeenAtOnce(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "media.pid")
	run := func() *exec.Cmd { return runWatched(t, pidfile) }
	cmd := run()
	// A long interval: only the pidfd can explain a quick report.
	m := start(t, Config{Name: "media", Kind: "process", Target: pidfile, Interval: time.Second, Rise: 1, Fall: 1, Critical: true})
	passing(t, m)
	killed := time.Now()
	cmd.Process.Kill()
	cmd.Wait()
	ev := expect(t, m, false, time.Second)
	t.Logf("death reported %v after kill", ev.At.Sub(killed))
	if !strings.Contains(ev.Detail, "exited") || !ev.Critical {
		t.Errorf("event %+v", ev)
	}
	run()
	expect(t, m, true, 3*time.Second)
}

func TestExecRiseFallAndTimeout(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "ok")
	os.WriteFile(flag, nil, 0o644)
	// A generous timeout: this part counts samples, and on a loaded CI
	// machine a 10 ms timeout failed the probe before the flag went.
	// Timeouts are the hanging check's business below.
	m := start(t, Config{Name: "probe", Kind: "exec", Target: "test -e " + flag, Interval: 20 * time.Millisecond, Timeout: 5 * time.Second, Rise: 3, Fall: 2})
	passing(t, m)
	os.Remove(flag)
	start := time.Now()
	expect(t, m, false, time.Second)
	if d := time.Since(start); d < 15*time.Millisecond {
		t.Errorf("fell after %v: fall=2 at 20ms needs two samples", d)
	}
	os.WriteFile(flag, nil, 0o644)
	expect(t, m, true, time.Second)

	hang := start2(t, Config{Name: "hang", Kind: "exec", Target: "sleep 10", Interval: 200 * time.Millisecond, Timeout: 50 * time.Millisecond, Fall: 1})
	ev := expect(t, hang, false, 2*time.Second)
	if !strings.Contains(ev.Detail, "timed out") {
		t.Errorf("hanging check: %q", ev.Detail)
	}
}

func start2(t *testing.T, c Config) *Monitor { return start(t, c) }

func TestHTTPAndTCP(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
		w.Write([]byte("media: ready"))
	}))
	defer srv.Close()
	m := start(t, Config{Name: "web", Kind: "http", Target: srv.URL, Interval: 20 * time.Millisecond, Timeout: 5 * time.Second, Fall: 1, Rise: 1, Body: "ready"})
	passing(t, m)
	status.Store(503)
	ev := expect(t, m, false, time.Second)
	if !strings.Contains(ev.Detail, "HTTP 503") {
		t.Errorf("detail %q", ev.Detail)
	}
	status.Store(200)
	expect(t, m, true, time.Second)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	tm := start(t, Config{Name: "db", Kind: "tcp", Target: addr, Interval: 20 * time.Millisecond, Timeout: 5 * time.Second, Fall: 1, Rise: 1})
	passing(t, tm)
	ln.Close()
	expect(t, tm, false, time.Second)
}

func TestUnknownKind(t *testing.T) {
	if _, err := New([]Config{{Name: "x", Kind: "smoke"}}); err == nil {
		t.Fatal("accepted an unknown kind")
	}
}

// runs matches a process by its command line where its exe link is not
// readable (a service under another user, seen from the sandboxed unit;
// that case runs for real in the systemd package test).
func TestRunsMatchesTheCommandLine(t *testing.T) {
	path, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep")
	}
	real, _ := filepath.EvalSymlinks(path)
	for _, argv0 := range []string{"sleep", path} {
		cmd := exec.Command(path, "60")
		cmd.Args[0] = argv0
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid := strconv.Itoa(cmd.Process.Pid)
		// The command line is there once exec has happened.
		for deadline := time.Now().Add(2 * time.Second); !runs(pid, path, real) && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		}
		if !runs(pid, path, real) {
			t.Errorf("started as %q: not matched to %s", argv0, path)
		}
		if runs(pid, "/usr/sbin/media-server", "/usr/sbin/media-server") {
			t.Errorf("started as %q: matched to another program", argv0)
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// A watched process that lives costs nothing while its check is healthy:
// no sample, so no wake-up, until it exits. After a restart, samples come
// every interval until rise is reached again.
func TestProcessCheckIdlesWhileHealthy(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "media.pid")
	run := func() *exec.Cmd { return runWatched(t, pidfile) }
	samples := func(m *Monitor) int {
		c := m.checks[0]
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.good
	}
	idle := func(m *Monitor) {
		t.Helper()
		before := samples(m)
		// What is tested is that nothing happens for ten intervals.
		time.Sleep(200 * time.Millisecond)
		if n := samples(m) - before; n != 0 {
			t.Errorf("%d samples of a healthy, living process in 200 ms at a 20 ms interval; want none", n)
		}
	}
	cmd := run()
	m := start(t, Config{Name: "media", Kind: "process", Target: pidfile, Interval: 20 * time.Millisecond, Rise: 3, Fall: 1, Critical: true})
	passing(t, m)
	idle(m)
	cmd.Process.Kill()
	cmd.Wait()
	expect(t, m, false, time.Second)
	run()
	expect(t, m, true, 2*time.Second) // three samples, 20 ms apart
	idle(m)
}
