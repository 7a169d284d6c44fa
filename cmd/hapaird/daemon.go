package main

import (
	"fmt"
	"io"

	"github.com/hapair/hapair/config"
)

func daemon(cfg *config.Config, self *config.Node, rule string, stderr io.Writer) int {
	fmt.Fprintln(stderr, "hapaird: the daemon is not built yet; use --check")
	return 1
}

func cleanup(cfg *config.Config, self *config.Node, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "hapaird: --cleanup is not built yet")
	return 1
}
