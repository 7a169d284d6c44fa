package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hapair/hapair/config"
	"github.com/hapair/hapair/internal/control"
	"github.com/hapair/hapair/lab"
)

func TestLockUnlockWithoutDaemon(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	sock := filepath.Join(dir, "none.sock")
	if rc := run([]string{"lock", "-c", "/nonexistent.toml", "--socket", sock, "--state-dir", dir, "--reason", "fixing the switch"}, &out, &errb); rc != 0 {
		t.Fatalf("lock: %d %s", rc, errb.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "locked"))
	if err != nil || !strings.Contains(string(b), "fixing the switch") || !strings.Contains(string(b), "locked by ") {
		t.Fatalf("lock file: %q %v", b, err)
	}
	if !strings.Contains(out.String(), "redundancy is unavailable") {
		t.Errorf("lock did not warn: %s", out.String())
	}
	for i := 0; i < 2; i++ { // unlocking twice is fine
		if rc := run([]string{"unlock", "-c", "/nonexistent.toml", "--socket", sock, "--state-dir", dir}, &out, &errb); rc != 0 {
			t.Fatalf("unlock: %d %s", rc, errb.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "locked")); !os.IsNotExist(err) {
		t.Errorf("lock file still there: %v", err)
	}
}

func TestStatusDaemonDown(t *testing.T) {
	var out, errb bytes.Buffer
	rc := run([]string{"status", "-c", "/nonexistent.toml", "--socket", filepath.Join(t.TempDir(), "none.sock")}, &out, &errb)
	if rc == 0 || !strings.Contains(errb.String(), "hapaird is not running") || strings.Count(errb.String(), "\n") != 1 {
		t.Fatalf("rc %d, stderr %q: want one line saying the daemon is down", rc, errb.String())
	}
}

func TestLabScenario(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root for network namespaces")
	}
	var out, errb bytes.Buffer
	if rc := run([]string{"lab", "--scenario", "host-loss"}, &out, &errb); rc != 0 {
		t.Fatalf("lab: %d\n%s\n%s", rc, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "host-loss: VIP moved a -> b") {
		t.Errorf("lab output:\n%s", out.String())
	}
	for _, ns := range lab.Leftovers() {
		if strings.Contains(out.String(), ns) {
			t.Errorf("lab left namespace %s behind", ns)
		}
	}
}

// Keys piped in are run, and the end of the input ends the lab as q
// does: it used to run on, daemons and namespaces, until a signal.
func TestLabRunsPipedKeysAndEndsWithItsInput(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root for network namespaces")
	}
	labInput = strings.NewReader("s\n")
	t.Cleanup(func() { labInput = os.Stdin })
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run([]string{"lab"}, &out, &errb) }()
	var rc int
	select {
	case rc = <-done:
	case <-time.After(2 * time.Minute):
		// The lab is still up: a signal is what ends it now.
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		rc = <-done
		t.Fatalf("the lab ran on 2 minutes after its input ended (rc %d once signalled):\n%s", rc, out.String())
	}
	if rc != 0 || !strings.Contains(out.String(), "switchover: VIP moved") || !strings.Contains(out.String(), "end of input: removing the lab") {
		t.Fatalf("rc %d, want 0 with the switchover run and the end of input said:\n%s\n%s", rc, out.String(), errb.String())
	}
	// Its namespaces are named in its output; other packages' tests may
	// have theirs meanwhile.
	for _, ns := range lab.Leftovers() {
		if strings.Contains(out.String(), ns) {
			t.Errorf("the lab left namespace %s behind", ns)
		}
	}
}

// On a machine without the lab's tools, the demo says which and how to
// install them, in one line, before it builds anything (without nft it
// used to come up and fail at the first host loss).
func TestLabSaysWhatToInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab checks its tools once it runs as root")
	}
	t.Setenv("PATH", t.TempDir())
	var out, errb bytes.Buffer
	rc := run([]string{"lab", "--scenario", "host-loss"}, &out, &errb)
	if rc != 1 || !strings.Contains(errb.String(), "apt-get install iproute2 nftables") || strings.Count(errb.String(), "\n") != 1 {
		t.Fatalf("rc %d, stderr %q: want one line saying what to install", rc, errb.String())
	}
	if out.Len() != 0 {
		t.Errorf("the lab started anyway:\n%s", out.String())
	}
}

func TestUnknownCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if rc := run([]string{"frobnicate"}, &out, &errb); rc != 2 || !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Fatalf("rc %d, %q", rc, errb.String())
	}
}

func TestKeygen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k", "hapair.key")
	var out, errb bytes.Buffer
	if rc := run([]string{"keygen", "-o", path}, &out, &errb); rc != 0 {
		t.Fatalf("keygen: %d %s", rc, errb.String())
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 || st.Size() != 32 {
		t.Fatalf("key file: %v %v", st, err)
	}
	first, _ := os.ReadFile(path)
	if rc := run([]string{"keygen", "-o", path}, &out, &errb); rc == 0 || !strings.Contains(errb.String(), "exists") {
		t.Fatalf("keygen over an existing key: %d %s", rc, errb.String())
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(first, again) {
		t.Fatal("existing key replaced without --force")
	}
}

// Issue 15.5/15.6: exit codes follow the conventions (0 ok, 1 error, 2
// usage, 3 not running), nothing is silently ignored, and "am I active" is
// a scriptable exit code.
func TestExitCodes(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, c := range []struct {
		args []string
		rc   int
		want string
	}{
		{[]string{"status", "--socket", sock}, 3, "hapaird is not running"},
		{[]string{"role", "--socket", sock}, 3, "hapaird is not running"},
		{[]string{"sessions", "--socket", sock}, 3, "hapaird is not running"},
		{[]string{"events", "--socket", sock}, 3, "hapaird is not running"},
		{[]string{"switchover", "--socket", sock}, 3, "hapaird is not running"},
		{[]string{"status", "foo", "--json", "--socket", sock}, 2, `unexpected argument "foo"`},
		{[]string{"lock", "maintenance", "--socket", sock}, 2, `unexpected argument "maintenance"`},
	} {
		var out, errb bytes.Buffer
		rc := run(append(c.args, "-c", "/nonexistent.toml"), &out, &errb)
		if rc != c.rc || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, rc, errb.String(), c.rc, c.want)
		}
	}
}

// Issue 15.6: common flags before or after the command, long forms, help
// for a command, and a config that cannot be read is said, not replaced by
// the default paths (a lock written there is one the daemon never reads).
func TestCommonFlagsAnywhereAndConfigErrors(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "custom.sock")
	cfg := filepath.Join(dir, "hapair.toml")
	os.WriteFile(cfg, []byte("socket = \""+sock+"\"\nstate_dir = \""+dir+"\"\n"), 0o644)
	for _, c := range []struct {
		args []string
		rc   int
		want string
	}{
		{[]string{"-c", cfg, "status"}, 3, sock},
		{[]string{"--config", cfg, "status"}, 3, sock},
		{[]string{"--config=" + cfg, "role"}, 3, sock},
		{[]string{"status", "--config", cfg}, 3, sock},
		{[]string{"-c", cfg, "keygen"}, 2, "keygen takes no -c"},
		{[]string{"help", "lock"}, 0, "-reason"},
		{[]string{"lock", "--help"}, 0, "-reason"},
		{[]string{"lock", "-c", filepath.Join(dir, "missing.toml"), "--state-dir", dir}, 1, "missing.toml"},
		{[]string{"status", "-c", filepath.Join(dir, "missing.toml")}, 1, "or give --socket"},
	} {
		var out, errb bytes.Buffer
		rc := run(c.args, &out, &errb)
		if rc != c.rc || !strings.Contains(out.String()+errb.String(), c.want) {
			t.Errorf("%v: exit %d, output %q %q; want %d and %q", c.args, rc, out.String(), errb.String(), c.rc, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "locked")); !os.IsNotExist(err) {
		t.Errorf("a lock was written with the config unreadable: %v", err)
	}
}

// Issue 15.9: hapairctl(8) documents every command and every flag each
// command takes, as the command's own --help lists them.
func TestManPageListsEveryFlag(t *testing.T) {
	b, err := os.ReadFile("../../docs/man/hapairctl.8.md")
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	flagLine := regexp.MustCompile(`(?m)^\s+-([a-z][a-z-]*)`)
	for _, cmd := range []string{"status", "role", "switchover", "lock", "unlock", "sessions", "events", "keygen", "lab"} {
		if !strings.Contains(page, "**"+cmd+"**") {
			t.Errorf("hapairctl(8) does not document the command %s", cmd)
		}
		var out, errb bytes.Buffer
		if rc := run([]string{cmd, "--help"}, &out, &errb); rc != 0 {
			t.Errorf("%s --help: exit %d", cmd, rc)
		}
		for _, m := range flagLine.FindAllStringSubmatch(out.String()+errb.String(), -1) {
			if !strings.Contains(page, "**-"+m[1]+"**") && !strings.Contains(page, "**--"+m[1]+"**") {
				t.Errorf("hapairctl(8) does not document %s's -%s", cmd, m[1])
			}
		}
	}
}

// Issue 15.4: a user who may not use the socket is told so, and what to
// do, not that hapaird is not running. Run as nobody against a socket of
// root's (mode 0660), since root itself is never refused.
func TestPermissionDeniedSaysWhy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the tool as another user")
	}
	dir, err := os.MkdirTemp("", "hapairctl-perm-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "hapair.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	os.Chmod(sock, 0o660)
	bin := filepath.Join(dir, "hapairctl")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"status"}, {"sessions"}, {"events"}} {
		cmd := exec.Command(bin, append(args, "--socket", sock)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "permission denied on "+sock+": add yourself to group hapair") || strings.Count(string(out), "\n") != 1 {
			t.Errorf("%v as nobody: %v, %q; want exit 1 and one line saying to join group hapair", args, err, out)
		}
	}
}

// slowDaemon answers status with a dead interval of 1 s and a switchover
// only after answerAfter, as a daemon of such timers may (its bounds are
// six dead intervals and two seconds).
type slowDaemon struct{ answerAfter time.Duration }

func (slowDaemon) Status() control.Status {
	return control.Status{Node: "a", Role: "ACTIVE", DeadMs: 1000}
}

func (d slowDaemon) Switchover(ctx context.Context, force bool) error {
	select {
	case <-time.After(d.answerAfter): // the daemon's own waits
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (slowDaemon) SetLock(context.Context, bool, string) error { return nil }

// hapairctl switchover waits as long as the daemon's bounds: it gave up
// after 5 s (the control client's timeout), saying the switchover failed,
// while the daemon went on with it.
func TestSwitchoverWaitsForTheDaemonsBounds(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "hapair.sock")
	l, err := net.Listen("unix", config.AdminSocket(sock))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: control.NewAdminMux(slowDaemon{answerAfter: 6 * time.Second})}
	go srv.Serve(l)
	defer srv.Close()
	var out, errb bytes.Buffer
	if rc := run([]string{"switchover", "--socket", sock}, &out, &errb); rc != 0 {
		t.Fatalf("exit %d: %s", rc, errb.String())
	}
	if !strings.Contains(out.String(), "switched over in") {
		t.Errorf("said %q", out.String())
	}
}
