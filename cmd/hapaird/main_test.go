package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hapair/hapair/lab"
	"github.com/hapair/hapair/lab/labtest"
	"github.com/hapair/hapair/node"
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
	if rc := run([]string{"--check", "--file-only", "-c", path, "--node", "beta"}, &out, &errb); rc != 0 {
		t.Fatalf("--check exit %d: %s", rc, errb.String())
	}
	for _, want := range []string{"ok", "beta (found by --node beta), peer alpha", "192.0.2.100/24 on eth0", "every 100ms"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

// turbo on a kernel that does not preempt is warned about, with where
// that was read; default is not, whatever the kernel. --file-only, which
// checks the file as on a workstation, says nothing of this kernel.
func TestCheckWarnsOfTurboOnAKernelThatDoesNotPreempt(t *testing.T) {
	model, _ := node.KernelPreemption()
	preempts := model != "none" && model != "voluntary" && model != "none or voluntary"
	t.Logf("this kernel: %q", model)
	for _, profile := range []string{"default", "turbo"} {
		path := exampleConfig(t, "")
		b, _ := os.ReadFile(path)
		os.WriteFile(path, bytes.Replace(b, []byte(`profile = "default"`), []byte(`profile = "`+profile+`"`), 1), 0o644)
		for _, fileOnly := range []bool{false, true} {
			args := []string{"--check", "-c", path, "--node", "beta"}
			if fileOnly {
				args = append(args, "--file-only")
			}
			// The full check fails here (this machine has none of
			// beta's interfaces and addresses) and warns all the same.
			var out, errb bytes.Buffer
			if rc := run(args, &out, &errb); rc != 0 && (fileOnly || !strings.Contains(errb.String(), "hapaird would not start on this machine as beta")) {
				t.Fatalf("%s: exit %d: %s", strings.Join(args, " "), rc, errb.String())
			}
			warned := strings.Contains(errb.String(), "on a kernel that does not preempt ("+model+", from ")
			if want := profile == "turbo" && !preempts && model != "" && !fileOnly; warned != want {
				t.Errorf("profile %s, --file-only %v, on a kernel that preempts %q: warned %v, want %v; stderr:\n%s", profile, fileOnly, model, warned, want, errb.String())
			}
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

// Issue 15.1: --check finds what the daemon would fail on at start, also
// when the file is valid: here, the example run as beta on node b of a lab
// pair, which has beta's addresses (its interfaces renamed to the lab's),
// then with a hook whose program is not there, an exec check whose program
// is not there, and TLS files that do not exist. Each is named by line and
// key; --file-only checks the file alone.
func TestCheckFindsWhatThisMachineLacks(t *testing.T) {
	if daemonBin == "" {
		t.Skip("needs root: the example's addresses are made real in a lab namespace")
	}
	p := labtest.NewPair(t, lab.Options{})
	path := exampleConfig(t, "")
	src, _ := os.ReadFile(path)
	src = bytes.ReplaceAll(bytes.ReplaceAll(src, []byte(`"eth1"`), []byte(strconv.Quote(lab.Heartbeat))), []byte(`"eth0"`), []byte(strconv.Quote(lab.Public)))
	os.WriteFile(path, src, 0o644)
	check := func(args ...string) (rc int, stderr string) {
		t.Helper()
		cmd := lab.Command(p.B, daemonBin, append([]string{"--check", "-c", path, "--node", "beta"}, args...)...)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), errb.String()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, errb.String()
	}
	if rc, stderr := check(); rc != 0 || strings.Contains(stderr, "warning") {
		t.Fatalf("the example on node b: exit %d: %s", rc, stderr)
	}
	// Its switch port dark: a warning, not an error (a cable may come).
	if err := p.SetLink(p.Client, "pb", false); err != nil {
		t.Fatal(err)
	}
	if rc, stderr := check(); rc != 0 || !strings.Contains(stderr, "warning: pub0 has no carrier: this node would start in FAULT") {
		t.Errorf("the example on node b with its public link dark: exit %d: %s", rc, stderr)
	}
	// --file-only checks the file as on a workstation: this machine's
	// links are not the node's, and it says nothing of them.
	if rc, stderr := check("--file-only"); rc != 0 || strings.Contains(stderr, "warning") {
		t.Errorf("--file-only with node b's public link dark: exit %d: %s", rc, stderr)
	}
	if err := p.SetLink(p.Client, "pb", true); err != nil {
		t.Fatal(err)
	}
	// The peer's replication address routed over the heartbeat link, or
	// over a macvlan on it (VLANs are not in this kernel): both paths on
	// one cable, a warning.
	ip := func(args ...string) {
		t.Helper()
		if out, err := lab.Command(p.B, "ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("link", "add", "link", lab.Heartbeat, "name", "hbmv", "type", "macvlan", "mode", "bridge")
	ip("link", "set", "hbmv", "up")
	for _, dev := range []string{lab.Heartbeat, "hbmv"} {
		ip("route", "add", "198.51.100.1/32", "dev", dev)
		if rc, stderr := check(); rc != 0 || !strings.Contains(stderr, "warning: the UDP heartbeat path to 198.51.100.1 leaves by "+dev+", on the same device as the heartbeat interface "+lab.Heartbeat) {
			t.Errorf("the example on node b with its replication routed over %s: exit %d: %s", dev, rc, stderr)
		}
		if rc, stderr := check("--file-only"); rc != 0 || strings.Contains(stderr, "warning") {
			t.Errorf("--file-only with node b's replication routed over %s: exit %d: %s", dev, rc, stderr)
		}
		ip("route", "del", "198.51.100.1/32", "dev", dev)
	}
	ip("link", "del", "hbmv")
	dir := filepath.Dir(path)
	lines := strings.Count(string(src), "\n")
	src = append(src, []byte(`
[tls]
cert = "`+dir+`/{node}.crt"
key = "`+dir+`/{node}.key"
ca = "`+dir+`/ca.crt"

[[check]]
name = "probe"
kind = "exec"
target = "/nonexistent/probe --quick"

[[hook]]
on = ["active"]
command = ["/nonexistent/notify-noc", "--now"]
`)...)
	os.WriteFile(path, src, 0o644)
	rc, stderr := check()
	if rc != 1 {
		t.Fatalf("exit %d, want 1: %s", rc, stderr)
	}
	for _, want := range []string{
		fmt.Sprintf("%s:%d: tls.cert: ", path, lines+3),
		"beta.crt",
		fmt.Sprintf("%s:%d: check[1].target: ", path, lines+10),
		"/nonexistent/probe",
		fmt.Sprintf("%s:%d: hook[1].command: ", path, lines+14),
		"/nonexistent/notify-noc",
		"hapaird would not start on this machine as beta",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if rc, stderr := check("--file-only"); rc != 0 {
		t.Errorf("--file-only: exit %d: %s", rc, stderr)
	}
	var out, errb bytes.Buffer
	if rc := run([]string{"--file-only", "-c", path, "--node", "beta"}, &out, &errb); rc != 2 {
		t.Errorf("--file-only without --check: exit %d, want 2 (usage), not a daemon", rc)
	}
}

// Issue 15.9: hapaird(8) documents every flag the daemon takes.
func TestManPageListsEveryFlag(t *testing.T) {
	b, err := os.ReadFile("../../docs/man/hapaird.8.md")
	if err != nil {
		t.Fatal(err)
	}
	var o options
	flags(&o, io.Discard).VisitAll(func(f *flag.Flag) {
		if !strings.Contains(string(b), "**-"+f.Name+"**") && !strings.Contains(string(b), "**--"+f.Name+"**") {
			t.Errorf("hapaird(8) does not document -%s (%s)", f.Name, f.Usage)
		}
	})
}
