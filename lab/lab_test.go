package lab

import (
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func ping(t *testing.T, ns, addr string) error {
	t.Helper()
	return Reach(ns, netip.MustParseAddr(addr), time.Second)
}

func TestPairComesUpAndGoesAway(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			p.Close()
		}
	}()
	for _, c := range []struct{ ns, addr string }{
		{p.Client, PublicAddr["a"].Addr().String()},
		{p.Client, PublicAddr["b"].Addr().String()},
		{p.Client, PublicAddr6["b"].Addr().String()},
		{p.A, ReplAddr["b"].Addr().String()},
		{p.B, PublicAddr["a"].Addr().String()},
	} {
		if err := ping(t, c.ns, c.addr); err != nil {
			t.Errorf("%s cannot reach %s: %v", c.ns, c.addr, err)
		}
	}
	// The heartbeat link is a cable: down at a, no carrier at b.
	if err := p.CutHeartbeat(false); err != nil {
		t.Fatal(err)
	}
	l, err := p.Handle(p.B).LinkByName(Heartbeat)
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().OperState.String() == "up" {
		t.Errorf("b's %s still up after a's end went down", Heartbeat)
	}
	// Cutting the replication link stops traffic across it.
	if err := p.CutReplication(false); err != nil {
		t.Fatal(err)
	}
	if err := ping(t, p.A, ReplAddr["b"].Addr().String()); err == nil {
		t.Error("replication link cut but a still reaches b over it")
	}
	if err := p.CutReplication(true); err != nil {
		t.Fatal(err)
	}

	names := []string{p.Client, p.A, p.B}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	left := Leftovers()
	for _, n := range names {
		if slices.Contains(left, n) {
			t.Errorf("namespace %s left behind", n)
		}
	}
}

func TestHeartbeatSwitchAndIsolate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	p, err := New(Options{HeartbeatSwitch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Tap == "" {
		t.Fatal("no tap namespace")
	}
	if err := ping(t, p.Client, PublicAddr["a"].Addr().String()); err != nil {
		t.Fatal(err)
	}
	if err := p.Isolate("a", false); err != nil {
		t.Fatal(err)
	}
	if err := ping(t, p.Client, PublicAddr["a"].Addr().String()); err == nil {
		t.Error("a isolated but the client still reaches it")
	}
	if err := p.Isolate("a", true); err != nil {
		t.Fatal(err)
	}
	// The client's neighbour entry for a failed during the isolation;
	// resolving it again may take the kernel a retransmit period.
	if err := Reach(p.Client, PublicAddr["a"].Addr(), 5*time.Second); err != nil {
		t.Errorf("a restored but unreachable: %v", err)
	}
}

func TestProcessesEndWithThePair(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	cmd := Command(p.A, "sleep", "600")
	wait, err := p.Start(cmd)
	if err != nil {
		p.Close()
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if exited, err := wait(time.Second); !exited || err == nil {
		t.Errorf("process still running or exited cleanly after Close: %v %v", exited, err)
	}
}

// A holder watcher a test did not stop (it failed first) ends with the
// pair, before the pair's handles go: reading them after would panic, and
// the panic would end the test binary before its namespaces are deleted.
func TestCloseStopsHolderWatchers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	w := p.WatchHolders()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.done:
	default:
		t.Fatal("the watcher still runs after Close")
	}
	w.Stop() // a test's deferred Stop, after the pair's cleanup
}

// A machine without the lab's tools is told which and how to install them,
// before any pair is built.
func TestCheckToolsNamesWhatIsMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := CheckTools()
	if err == nil {
		t.Fatal("no tools on PATH, and CheckTools found nothing missing")
	}
	for _, want := range []string{"ip and nft not found", "apt-get install iproute2 nftables"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckTools: %q, want it to say %q", err, want)
		}
	}
	if got := MissingPackages(); len(got) != 2 {
		t.Errorf("MissingPackages: %v, want iproute2 and nftables", got)
	}
}
