// Package packaging holds the nfpm configuration, maintainer scripts and
// default config; this test builds the packages the way a release does
// (make package) and inspects them with the distributions' own tools.
package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds four binaries")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	dist := t.TempDir()
	run(t, "make", "-C", "..", "package", "VERSION=1.2.3", "DIST="+dist)
	for _, f := range []string{"hapair_1.2.3_amd64.deb", "hapair_1.2.3_arm64.deb", "hapair-1.2.3-1.x86_64.rpm", "hapair-1.2.3-1.aarch64.rpm"} {
		if _, err := os.Stat(filepath.Join(dist, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	// The changelog is the commit's, not the clock's: the same commit
	// builds the same package.
	epoch := strings.TrimSpace(run(t, "git", "-C", "..", "log", "-1", "--format=%ct"))
	want := strings.TrimSpace(run(t, "date", "-u", "-R", "-d", "@"+epoch))
	if cl := run(t, "sh", "-c", "gzip -dc "+filepath.Join(dist, "changelog.gz")); !strings.Contains(cl, "  "+want+"\n") {
		t.Errorf("changelog not dated by the commit (%s):\n%s", want, cl)
	}
	deb := filepath.Join(dist, "hapair_1.2.3_amd64.deb")
	info := run(t, "dpkg-deb", "-I", deb)
	for _, want := range []string{"Package: hapair", "Version: 1.2.3", "Architecture: amd64", "Depends: iproute2"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
		}
	}
	ctrl := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, ctrl)
	if b, _ := os.ReadFile(filepath.Join(ctrl, "conffiles")); !strings.Contains(string(b), "/etc/hapair/hapair.toml") {
		t.Errorf("hapair.toml is not a conffile: %q", b)
	}
	files := run(t, "dpkg-deb", "-c", deb)
	for _, want := range []string{"./usr/sbin/hapaird", "./usr/bin/hapairctl", "./lib/systemd/system/hapaird.service", "./usr/share/man/man8/hapaird.8.gz", "./usr/share/man/man5/hapair.toml.5.gz", "./usr/lib/sysusers.d/hapair.conf"} {
		if !strings.Contains(files, want) {
			t.Errorf("the .deb lacks %s", want)
		}
	}
	if _, err := exec.LookPath("lintian"); err == nil {
		out, _ := exec.Command("lintian", "--allow-root", deb).CombinedOutput()
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "E: ") {
				t.Errorf("lintian: %s", l)
			}
		}
		t.Logf("lintian:\n%s", out)
	} else {
		t.Log("lintian not installed: .ci/run installs it")
	}
	if _, err := exec.LookPath("rpm"); err == nil {
		rpm := filepath.Join(dist, "hapair-1.2.3-1.x86_64.rpm")
		info := run(t, "rpm", "-qip", rpm)
		for _, want := range []string{"Name        : hapair", "Version     : 1.2.3", "License     : MIT"} {
			if !strings.Contains(info, want) {
				t.Errorf("rpm -qip lacks %q:\n%s", want, info)
			}
		}
		if cfg := run(t, "rpm", "-qcp", rpm); !strings.Contains(cfg, "/etc/hapair/hapair.toml") {
			t.Errorf("rpm config files: %q", cfg)
		}
	}
	// The version is stamped into the binaries.
	run(t, "make", "-C", "..", "build", "VERSION=1.2.3", "DIST="+dist)
	if out := run(t, filepath.Join(dist, "hapaird"), "--version"); strings.TrimSpace(out) != "hapaird 1.2.3" {
		t.Errorf("hapaird --version: %q", out)
	}
}

// Applications import statesync/client: the main module must not make them
// inherit the packaging tools' dependencies (tools/go.mod has those).
func TestToolsStayOutOfTheMainModule(t *testing.T) {
	mods := run(t, "go", "list", "-m", "all")
	for _, tool := range []string{"github.com/goreleaser/nfpm", "github.com/cpuguy83/go-md2man"} {
		if strings.Contains(mods, tool) {
			t.Errorf("the main module requires %s", tool)
		}
	}
}

func TestUnitVerifies(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	// verify resolves ExecStart paths; point them at a real binary.
	dir := t.TempDir()
	unit, _ := os.ReadFile("../systemd/hapaird.service")
	bin := filepath.Join(dir, "hapaird")
	run(t, "go", "build", "-o", bin, "../cmd/hapaird")
	os.WriteFile(filepath.Join(dir, "hapaird.service"), []byte(strings.ReplaceAll(string(unit), "/usr/sbin/hapaird", bin)), 0o644)
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", filepath.Join(dir, "hapaird.service")).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	sec, _ := exec.Command("systemd-analyze", "security", "--offline=yes", filepath.Join(dir, "hapaird.service")).CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(sec)), "\n")
	t.Log(lines[len(lines)-1])
}
