package main

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestMemoryCountsSharedPagesOnce runs a second copy of this test binary
// beside the first: summed, their RSS counts the executable's pages twice;
// the memory measure counts each page once, so two processes of one
// executable hold less than twice what one does.
func TestMemoryCountsSharedPagesOnce(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("pagemap gives frame numbers to root only")
	}
	if os.Getenv("HAPAIR_BENCH_MEMORY_CHILD") != "" {
		os.Stdin.Read(make([]byte, 1)) // until the parent closes it
		return
	}
	child := exec.Command(os.Args[0], "-test.run=^TestMemoryCountsSharedPagesOnce$")
	child.Env = append(os.Environ(), "HAPAIR_BENCH_MEMORY_CHILD=1")
	in, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { in.Close(); child.Wait() }()

	oneRSS, oneMem, oneAnon, err := memory([]int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if oneMem != oneRSS || oneAnon <= 0 || oneAnon >= oneMem {
		t.Fatalf("one process: RSS %d KiB, memory %d KiB, anonymous %d KiB; want memory = RSS > anonymous > 0", oneRSS, oneMem, oneAnon)
	}
	// Twice the same process: every page is shared (the process may
	// grow a little between the two reads of its page tables).
	if rss, mem, _, err := memory([]int{os.Getpid(), os.Getpid()}); err != nil || mem*10 > rss*6 {
		t.Fatalf("the same process twice: RSS summed %d KiB, memory %d KiB, %v; want memory about half the sum", rss, mem, err)
	}
	rss, mem, _, err := memory([]int{os.Getpid(), child.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	if mem >= rss {
		t.Fatalf("two processes of one executable: memory %d KiB, RSS summed %d KiB; want the shared pages counted once", mem, rss)
	}
	t.Logf("one process %d KiB (%d own); two: RSS summed %d KiB, memory %d KiB", oneMem, oneAnon, rss, mem)
}

// A silence is a gap between wake-ups longer than turbo's dead interval,
// counted once however long it is.
func TestSilences(t *testing.T) {
	ms := func(v ...float64) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x*float64(time.Millisecond)))
		}
		return d
	}
	for _, c := range []struct {
		at      []time.Duration
		n       int
		longest time.Duration
	}{
		{nil, 0, 0},
		{ms(1), 0, 0},
		{ms(1, 2, 3, 4), 0, time.Millisecond},
		{ms(1, 2, 7, 8), 0, 5 * time.Millisecond}, // exactly the dead interval is no silence
		{ms(1, 2, 8, 9, 30), 2, 21 * time.Millisecond},
	} {
		if n, longest := silences(c.at); n != c.n || longest != c.longest {
			t.Errorf("silences(%v) = %d, %v; want %d, %v", c.at, n, longest, c.n, c.longest)
		}
	}
}
