package store

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The log's ring is outside the Go heap: counted there, its 16 MiB set the
// collector's goal at twice that, and an idle agent let tens of MiB of
// garbage become resident before its first collection.
func TestRingIsNotOnTheHeap(t *testing.T) {
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	s := New(Limits{})
	after := heap()
	if len(s.log.ring) != 16<<20 {
		t.Fatalf("ring of %d bytes, want the default 16 MiB", len(s.log.ring))
	}
	if grew := int64(after) - int64(before); grew > 1<<20 {
		t.Fatalf("a new store grew the heap by %d bytes", grew)
	}
	runtime.KeepAlive(s)
}

// A store that is dropped gives its ring back: the process's address space
// shrinks by its rings (the Go runtime never unmaps its own heap).
func TestRingIsFreedWithItsStore(t *testing.T) {
	vm := func() int64 {
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmSize:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return kb << 10
			}
		}
		t.Fatal("no VmSize")
		return 0
	}
	const rings, size = 8, 16 << 20
	stores := make([]*Store, rings)
	for i := range stores {
		stores[i] = New(Limits{LogBytes: size})
		stores[i].log.ring[size-1] = 1 // resident, as a log that filled
	}
	peak := vm()
	stores = nil
	deadline := time.Now().Add(10 * time.Second)
	for peak-vm() < (rings-1)*size {
		if time.Now().After(deadline) {
			t.Fatalf("address space shrank by %d bytes after %d rings of %d were dropped", peak-vm(), rings, size)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
