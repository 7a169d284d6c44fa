package client

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The Go example in docs/api.md compiles as it stands, its "..." made a
// return: an application developer copies it first. It named
// statesync.OpUpdate, which does not exist (store.OpUpdate does).
func TestTheAPIGuidesGoExampleCompiles(t *testing.T) {
	guide, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(guide), "\n```go\n")
	block, _, ok2 := strings.Cut(rest, "\n```")
	if !ok || !ok2 {
		t.Fatal("docs/api.md has no Go block")
	}
	imports, body, ok := strings.Cut(block, "\n)\n")
	if !ok || !strings.HasPrefix(imports, "import (") {
		t.Fatalf("the Go block does not open with its imports:\n%s", block)
	}
	src := "package main\n\n" + strings.Replace(imports, "import (", "import (\n\t\"context\"", 1) + "\n)\n\n" +
		"func main() {\n\tctx := context.Background()\n\tdata := []byte(\"state=ivr\")\n" +
		"\tupdates := []struct {\n\t\tID   string\n\t\tData []byte\n\t}{{\"call-4711\", data}}\n" +
		strings.ReplaceAll(body, "{ ... }", "{ return }") + "\n\t_ = seq\n}\n"
	// Inside the module, so that its packages resolve; hidden from ./...
	dir, err := os.MkdirTemp("../..", ".api-example-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "main.go")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "vet", file).CombinedOutput()
	if err != nil {
		t.Errorf("the guide's Go example does not compile: %v\n%s\n%s", err, out, src)
	}
}
