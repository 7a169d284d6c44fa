// Command hapairctl is hapair's operator tool: it talks to the local
// daemon's socket, writes the lock file when the daemon is down, and runs
// the lab demo (design.md section 1).
package main

import (
	"fmt"
	"io"
	"os"
)

var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: hapairctl COMMAND [flags]

commands:
  lab        build a pair in network namespaces on this machine and show a failover
  version    print the version
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "lab":
		return lab(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "hapairctl", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "hapairctl: unknown command %q\n%s", args[0], usage)
	return 2
}
