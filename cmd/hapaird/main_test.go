package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// exampleConfig copies packaging/hapair.toml next to a fresh key so the
// shipped example is what gets checked.
func exampleConfig(t *testing.T, prepend string) string {
	t.Helper()
	src, err := os.ReadFile("../../packaging/hapair.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "hapair.key")
	if err := os.WriteFile(key, bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	src = bytes.Replace(src, []byte("/etc/hapair/hapair.key"), []byte(key), 1)
	path := filepath.Join(dir, "hapair.toml")
	if err := os.WriteFile(path, append([]byte(prepend), src...), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheckExample(t *testing.T) {
	path := exampleConfig(t, "")
	var out, errb bytes.Buffer
	if rc := run([]string{"--check", "-c", path, "--node", "beta"}, &out, &errb); rc != 0 {
		t.Fatalf("--check exit %d: %s", rc, errb.String())
	}
	for _, want := range []string{"ok", "beta (found by --node beta), peer alpha", "192.0.2.100/24 on eth0", "every 100ms"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestCheckRejectsStrayKey(t *testing.T) {
	path := exampleConfig(t, "bogus_key = 1\n")
	var out, errb bytes.Buffer
	if rc := run([]string{"--check", "-c", path, "--node", "alpha"}, &out, &errb); rc == 0 {
		t.Fatal("--check accepted a stray key")
	}
	if want := path + ":1: bogus_key: unknown key"; !strings.Contains(errb.String(), want) {
		t.Errorf("stderr %q lacks %q", errb.String(), want)
	}
}

func TestCheckUnknownNode(t *testing.T) {
	path := exampleConfig(t, "")
	var out, errb bytes.Buffer
	if rc := run([]string{"--check", "-c", path, "--node", "gamma"}, &out, &errb); rc == 0 || !strings.Contains(errb.String(), "gamma") {
		t.Fatalf("exit %d, stderr %q: want a failure naming gamma", rc, errb.String())
	}
}

// Issue 15.5: "hapaird version" or any stray argument must not start a
// daemon; --help is not an error.
func TestStrayArgumentsStartNothing(t *testing.T) {
	path := exampleConfig(t, "")
	for _, args := range [][]string{{"version"}, {"help"}, {"-c", path, "start"}} {
		var out, errb bytes.Buffer
		if rc := run(args, &out, &errb); rc != 2 || !strings.Contains(errb.String(), "unexpected argument") {
			t.Errorf("%v: exit %d, %q", args, rc, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if rc := run([]string{"--help"}, &out, &errb); rc != 0 {
		t.Errorf("--help: exit %d", rc)
	}
}
