package heartbeat

import (
	"os"
	"path/filepath"
	"testing"
)

// Each start counts up from the last, and the generation orders boots.
// A counter file that holds no number (a hand edit, a disk that lost a
// block) is taken for a lost one: the node starts, counts from 1 and says
// so, where it used to refuse to start at all.
func TestNextGeneration(t *testing.T) {
	dir := t.TempDir()
	var prev uint64
	for i := range 3 {
		g, degraded, err := NextGeneration(dir)
		if err != nil || degraded != nil {
			t.Fatalf("start %d: %v, %v", i, degraded, err)
		}
		if g>>32 != uint64(i+1) || g <= prev {
			t.Errorf("start %d: generation %x after %x", i, g, prev)
		}
		prev = g
	}
	path := filepath.Join(dir, "generation")
	if err := os.WriteFile(path, []byte("three\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g, degraded, err := NextGeneration(dir)
	if err != nil || degraded == nil || g>>32 != 1 {
		t.Errorf("a damaged counter: generation %x, degraded %v, err %v", g, degraded, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "1\n" {
		t.Errorf("the counter file after: %q", b)
	}
	// The peer's generation, damaged, is as if lost.
	if err := os.WriteFile(filepath.Join(dir, "peer-generation"), []byte{0xff, 0}, 0o600); err != nil {
		t.Fatal(err)
	}
	if g, err := (peerGenerations{path: filepath.Join(dir, "peer-generation")}).load(); g != 0 || err != nil {
		t.Errorf("a damaged peer generation loads as %x, %v", g, err)
	}
}
