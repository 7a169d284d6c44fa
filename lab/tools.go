package lab

import (
	"fmt"
	"os/exec"
	"strings"
)

// tools are the programs the lab runs besides the daemon (and go, which
// builds it), each with the Debian package that has it.
var tools = []struct{ bin, pkg string }{
	{"ip", "iproute2"},  // every command in a node's namespace; tc (Shape) is in it too
	{"nft", "nftables"}, // host loss and one-way faults drop at an ingress
}

// missing lists the programs the lab needs that are not on PATH, and
// their Debian packages.
func missing() (bins, pkgs []string) {
	for _, t := range tools {
		if _, err := exec.LookPath(t.bin); err != nil {
			bins, pkgs = append(bins, t.bin), append(pkgs, t.pkg)
		}
	}
	return bins, pkgs
}

// MissingPackages lists the Debian packages of the programs the lab needs
// that are not on PATH (for the bench, which installs what it needs).
func MissingPackages() []string {
	_, pkgs := missing()
	return pkgs
}

// CheckTools says which programs the lab needs are missing and how to
// install them; nil when none is. Without nft a pair comes up and runs,
// and a host loss fails halfway through it: better said before.
func CheckTools() error {
	bins, pkgs := missing()
	if len(bins) == 0 {
		return nil
	}
	return fmt.Errorf("lab: %s not found; install it: apt-get install %s", strings.Join(bins, " and "), strings.Join(pkgs, " "))
}
