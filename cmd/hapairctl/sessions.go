package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hapair/hapair/config"
	"github.com/hapair/hapair/statesync"
	"github.com/hapair/hapair/statesync/client"
)

func sessions(args []string, stdout, stderr io.Writer) int {
	var asJSON bool
	c, rc := parseCommon("sessions", args, stderr, func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "print JSON") })
	if c == nil {
		return rc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := client.New(c.socket).List(ctx)
	if err != nil {
		return failed(stderr, "sessions", c.socket, err)
	}
	if asJSON {
		json.NewEncoder(stdout).Encode(list)
		return 0
	}
	fmt.Fprintf(stdout, "%-40s %8s %12s  %s\n", "ID", "VERSION", "AGE", "DATA")
	for _, s := range list {
		data := "(binary)"
		if s.Data != nil {
			data = *s.Data
			if len(data) > 60 {
				data = data[:57] + "..."
			}
		}
		fmt.Fprintf(stdout, "%-40s %8d %12s  %s\n", s.ID, s.Version, time.Duration(s.AgeMs*float64(time.Millisecond)).Round(time.Millisecond), data)
	}
	fmt.Fprintf(stdout, "%d sessions\n", len(list))
	return 0
}

func events(args []string, stdout, stderr io.Writer) int {
	c, rc := parseCommon("events", args, stderr, nil)
	if c == nil {
		return rc
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	enc := json.NewEncoder(stdout)
	err := client.New(c.socket).Events(ctx, func(ev statesync.Event) { enc.Encode(ev) })
	if err != nil && ctx.Err() == nil {
		return failed(stderr, "events", c.socket, err)
	}
	return 0
}

// keygen writes a fresh shared key, mode 0600, refusing to replace one:
// a pair whose nodes hold different keys cannot hear each other.
func keygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hapairctl keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "/etc/hapair/hapair.key", "where to write the key")
	force := fs.Bool("force", false, "replace an existing key file")
	if err := fs.Parse(args); err != nil {
		return parseRC(err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		fmt.Fprintln(stderr, "hapairctl keygen:", err)
		return 1
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if *force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o750); err != nil {
		fmt.Fprintln(stderr, "hapairctl keygen:", err)
		return 1
	}
	f, err := os.OpenFile(*out, flags, 0o600)
	if errors.Is(err, os.ErrExist) {
		fmt.Fprintf(stderr, "hapairctl keygen: %s exists; both nodes must hold the same key (use --force to replace it)\n", *out)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "hapairctl keygen:", err)
		return 1
	}
	_, err = f.Write(key)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(stderr, "hapairctl keygen:", err)
		return 1
	}
	if _, err := config.ReadKey(*out); err != nil {
		fmt.Fprintln(stderr, "hapairctl keygen:", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote a %d-byte key to %s (mode 0600); copy it to the other node\n", len(key), *out)
	return 0
}
