package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/hapair/hapair/internal/labnet"
)

func lab(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hapairctl lab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	profile := fs.String("profile", "default", "heartbeat profile: default or fast")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "hapairctl lab: needs root (it builds network namespaces)")
		return 1
	}
	p, err := labnet.New(labnet.Options{})
	if err != nil {
		fmt.Fprintln(stderr, "hapairctl lab:", err)
		return 1
	}
	defer p.Close()
	dir, err := os.MkdirTemp("", "hapair-lab-")
	if err != nil {
		fmt.Fprintln(stderr, "hapairctl lab:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	cfg, err := p.WriteConfig(dir, labnet.ConfigOptions{Profile: *profile})
	if err != nil {
		fmt.Fprintln(stderr, "hapairctl lab:", err)
		return 1
	}
	src, _ := os.ReadFile(cfg)
	fmt.Fprintf(stdout, "namespaces: client %s, node a %s, node b %s\n", p.Client, p.A, p.B)
	fmt.Fprintf(stdout, "config %s:\n%s\n", cfg, src)
	return 0
}
