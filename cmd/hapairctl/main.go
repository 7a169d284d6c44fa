// Command hapairctl is hapair's operator tool: it talks to the local
// daemon's socket, writes the lock file when the daemon is down, and runs
// the lab demo (design.md section 1).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hapair/hapair/config"
	"github.com/hapair/hapair/election"
	"github.com/hapair/hapair/internal/control"
	"github.com/hapair/hapair/internal/lockfile"
)

var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: hapairctl [-c FILE] COMMAND [flags]

commands:
  status       this node's and its peer's state (--json for scripts)
  role         print this node's role; exit 0 if ACTIVE, 1 if not, 3 if hapaird is not running
  switchover   hand the VIPs to the standby, make-before-break (--force on a locked node)
  lock         lock this node: it never changes role by itself (--reason TEXT)
  unlock       remove this node's lock
  sessions     list the sessions this node holds (--json)
  events       follow the application event stream (NDJSON)
  keygen       write a new shared key, mode 0600 (-o FILE, default /etc/hapair/hapair.key)
  lab          run a pair in network namespaces on this machine and show failovers
  version      print the version
  help         this text; help COMMAND: the command's flags

Common flags, before or after the command: -c or --config FILE (default
/etc/hapair/hapair.toml), --socket PATH, --state-dir DIR (override the
config's; given them, no config is read).
`

// common are the flags every daemon-facing command takes.
type common struct {
	config, socket, stateDir string
	// needState: the command writes the lock file when the daemon is
	// down, so it needs the state directory too.
	needState bool
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "c", "/etc/hapair/hapair.toml", "configuration `file`")
	fs.StringVar(&c.config, "config", "/etc/hapair/hapair.toml", "configuration `file` (as -c)")
	fs.StringVar(&c.socket, "socket", "", "daemon socket (default: the config's, else "+config.DefaultSocket+")")
	fs.StringVar(&c.stateDir, "state-dir", "", "state directory (default: the config's, else "+config.DefaultStateDir+")")
}

// parseCommon parses a daemon-facing command's flags: the common ones and
// whatever extra registers. A nil c means the command ends with exit code
// rc: 0 after --help, 2 on a usage error, 1 when the config cannot be read.
func parseCommon(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (c *common, rc int) {
	fs := flag.NewFlagSet("hapairctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c = &common{needState: name == "lock" || name == "unlock"}
	c.register(fs)
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, parseRC(err)
	}
	// Nothing is silently ignored: `lock "reason"` means --reason.
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "hapairctl %s: unexpected argument %q (hapairctl help %s)\n", name, fs.Arg(0), name)
		return nil, 2
	}
	if err := c.resolve(); err != nil {
		fmt.Fprintf(stderr, "hapairctl %s: %v\n", name, err)
		return nil, 1
	}
	return c, 0
}

// resolve fills the socket and the state dir from the config when not
// given. A config that cannot be read is an error, not the defaults: a
// lock written there would be one the daemon never reads.
func (c *common) resolve() error {
	if c.socket != "" && (c.stateDir != "" || !c.needState) {
		return nil
	}
	sock, state, err := config.Paths(c.config)
	switch {
	case err != nil && c.needState:
		return fmt.Errorf("%w (or give --socket and --state-dir)", err)
	case err != nil:
		return fmt.Errorf("%w (or give --socket)", err)
	}
	if c.socket == "" {
		c.socket = sock
	}
	if c.stateDir == "" {
		c.stateDir = state
	}
	return nil
}

// commonFlags take a value; globals splits them off the front of args
// (hapairctl -c FILE status), to be given to the command.
var commonFlags = map[string]bool{"-c": true, "--c": true, "-config": true, "--config": true, "-socket": true, "--socket": true, "-state-dir": true, "--state-dir": true}

func globals(args []string) (flags, rest []string) {
	for len(args) > 0 {
		name, _, hasValue := strings.Cut(args[0], "=")
		switch {
		case !commonFlags[name]:
			return flags, args
		case hasValue:
			flags, args = append(flags, args[0]), args[1:]
		case len(args) > 1:
			flags, args = append(flags, args[0], args[1]), args[2:]
		default:
			return flags, args // a flag without its value: the command says so
		}
	}
	return flags, args
}

// parseRC is the exit code of a flag parse that failed: 0 for --help,
// which is not an error, 2 for a usage error.
func parseRC(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// daemonFacing are the commands that take the common flags.
var daemonFacing = map[string]bool{"status": true, "role": true, "switchover": true, "lock": true, "unlock": true, "sessions": true, "events": true}

// commands are the commands that take arguments and write to stdout and
// stderr; version and help are run's own.
var commands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"status":     status,
	"role":       role,
	"switchover": switchover,
	"lock":       func(a []string, o, e io.Writer) int { return lock(a, o, e, true) },
	"unlock":     func(a []string, o, e io.Writer) int { return lock(a, o, e, false) },
	"lab":        runLab,
	"sessions":   sessions,
	"events":     events,
	"keygen":     keygen,
}

func run(args []string, stdout, stderr io.Writer) int {
	flags, args := globals(args)
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], append(flags, args[1:]...)
	if len(flags) > 0 && !daemonFacing[cmd] {
		fmt.Fprintf(stderr, "hapairctl: %s takes no %s\n", cmd, flags[0])
		return 2
	}
	if f := commands[cmd]; f != nil {
		return f(rest, stdout, stderr)
	}
	switch cmd {
	case "version", "--version":
		fmt.Fprintln(stdout, "hapairctl", version)
		return 0
	case "help", "-h", "--help":
		if len(rest) == 1 && rest[0] != "help" {
			return run([]string{rest[0], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "hapairctl: unknown command %q\n%s", cmd, usage)
	return 2
}

func status(args []string, stdout, stderr io.Writer) int {
	var asJSON bool
	c, rc := parseCommon("status", args, stderr, func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "print JSON") })
	if c == nil {
		return rc
	}
	s, rc := fetchStatus("status", c, stderr)
	if s == nil {
		return rc
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(s)
		return 0
	}
	fmt.Fprint(stdout, s.Text())
	return 0
}

// Exit codes: 0 ok, 1 error, 2 usage, 3 the daemon is not running.
const exitDown = 3

// failed reports err of command name in one line and picks the exit code:
// nothing listening on the socket is "not running" (3).
func failed(stderr io.Writer, name, socket string, err error) int {
	var op *net.OpError
	if errors.Is(err, control.ErrDown) || (errors.As(err, &op) && op.Op == "dial" && !errors.Is(err, syscall.EACCES)) {
		fmt.Fprintf(stderr, "hapairctl %s: hapaird is not running (no answer on %s)\n", name, socket)
		return exitDown
	}
	if errors.Is(err, syscall.EACCES) && !errors.Is(err, control.ErrDenied) {
		err = control.Denied(socket)
	}
	fmt.Fprintf(stderr, "hapairctl %s: %v\n", name, err)
	return 1
}

// fetchStatus asks the daemon for its status for command name; on failure
// it has said why and returns the exit code.
func fetchStatus(name string, c *common, stderr io.Writer) (*control.Status, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	socket := statusSocket(c.socket)
	s, err := control.NewClient(socket).Status(ctx)
	if err != nil {
		return nil, failed(stderr, name, socket, err)
	}
	return s, 0
}

// statusSocket is where status is read: as root, on the operator socket,
// which the daemon bounds apart, so that an application that fills the
// application socket (and is refused there) leaves root its view; as
// anyone else, on the application socket.
func statusSocket(socket string) string {
	if os.Geteuid() == 0 {
		if admin := config.AdminSocket(socket); fileExists(admin) {
			return admin
		}
	}
	return socket
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// role answers "is this node active" by exit code, for scripts: 0 active,
// 1 not active (the role is printed), 3 the daemon is not running.
func role(args []string, stdout, stderr io.Writer) int {
	c, rc := parseCommon("role", args, stderr, nil)
	if c == nil {
		return rc
	}
	s, rc := fetchStatus("role", c, stderr)
	if s == nil {
		return rc
	}
	fmt.Fprintln(stdout, s.Role)
	if s.Role != election.Active.String() {
		return 1
	}
	return 0
}

func switchover(args []string, stdout, stderr io.Writer) int {
	var force bool
	c, rc := parseCommon("switchover", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&force, "force", false, "switch over even though this node is locked")
	})
	if c == nil {
		return rc
	}
	// Waited for as long as the daemon's own bounds, which its dead
	// interval sets, and 5 s more: a fixed 5 s gave up on a pair with a
	// 1 s dead interval while its switchover went on. The daemon waits
	// two dead intervals for the standby's acknowledgements, then up to
	// its handover bound for the standby's frames to say so, and as long
	// for the standby to hold the VIPs.
	s, rc := fetchStatus("switchover", c, stderr)
	if s == nil {
		return rc
	}
	dead := time.Duration(s.DeadMs * float64(time.Millisecond))
	wait := 2*dead + 2*election.DefaultHandoffBound(dead) + 5*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	start := time.Now()
	if err := control.NewClient(config.AdminSocket(c.socket)).Switchover(ctx, force); err != nil {
		return failed(stderr, "switchover", config.AdminSocket(c.socket), err)
	}
	fmt.Fprintf(stdout, "switched over in %v: the peer is active\n", time.Since(start).Round(time.Microsecond))
	return 0
}

// lock sets or clears the lock through the daemon, which writes the lock
// file and applies it before it answers, so the lock is in force when this
// returns; with the daemon down, it writes the file itself, and the daemon
// reads it when it starts.
func lock(args []string, stdout, stderr io.Writer, on bool) int {
	name := "unlock"
	if on {
		name = "lock"
	}
	var reason string
	c, rc := parseCommon(name, args, stderr, func(fs *flag.FlagSet) { fs.StringVar(&reason, "reason", "", "why (shown in status and logs)") })
	if c == nil {
		return rc
	}
	name = "hapairctl " + name
	text := ""
	if on {
		who := "unknown"
		if u, err := user.Current(); err == nil {
			who = u.Username
		}
		if s := os.Getenv("SUDO_USER"); s != "" {
			who = s
		}
		host, _ := os.Hostname()
		text = fmt.Sprintf("locked by %s@%s at %s", who, host, time.Now().Format(time.RFC3339))
		if reason != "" {
			text += ": " + strings.ReplaceAll(reason, "\n", " ")
		}
		text += "\n"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := control.NewClient(config.AdminSocket(c.socket)).Lock(ctx, on, text)
	via := "by the daemon"
	if errors.Is(err, control.ErrDown) {
		path := filepath.Join(c.stateDir, "locked")
		if on {
			err = lockfile.Write(path, text)
		} else {
			err = lockfile.Remove(path)
		}
		via = "in " + path + " (hapaird is not running; it reads the lock when it starts)"
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	if !on {
		fmt.Fprintln(stdout, "unlocked "+via)
		return 0
	}
	fmt.Fprint(stdout, text)
	fmt.Fprintln(stdout, "locked "+via)
	fmt.Fprintln(stdout, "redundancy is unavailable while this node is locked: it will not fail over")
	return 0
}
