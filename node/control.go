package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hapair/hapair/internal/control"
	"github.com/hapair/hapair/statesync/repl"
)

// control opens a control socket at path serving h, keeping at most
// conns connections open.
func (n *Node) control(path string, h http.Handler, mode os.FileMode, group string, conns int) (*limitListener, error) {
	// The instance lock is ours, so a socket file here is a dead daemon's.
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, err
	}
	// Members of group hapair may use the API (the package creates it).
	if group != "" {
		if g, err := user.LookupGroup(group); err == nil {
			if gid, err := strconv.Atoi(g.Gid); err == nil {
				os.Chown(path, -1, gid)
			}
		}
	}
	// Bounds for a client that connects and dawdles: the headers within
	// 5 s, an idle keep-alive connection closed after a minute. No read
	// or write timeout: event subscriptions and the binary session stream
	// are long-lived by design.
	limited := limitConns(l, conns, rateLimited(n.log, "control socket"))
	limited.answer = tooMany(conns, path)
	n.server(&http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10, ConnContext: control.WithConn}, limited)
	return limited, nil
}

// replicationErrors logs the replication link's errors, rate-limited, but
// a peer's offer of TLS to this node without it, a step of the documented
// change of [tls] (operations.md section 4), only once and as news: it
// was a warning that the peer failed authentication, at each of the
// peer's new connections. A peer that requires TLS never connects: it
// warns of this node at each try, and status says NOT connected.
func replicationErrors(log *slog.Logger) func(error) {
	warn := rateLimited(log, "replication")
	var told atomic.Bool
	return func(err error) {
		if !errors.Is(err, repl.ErrPeerOffersTLS) {
			warn(err)
		} else if !told.Swap(true) {
			log.Info("the peer offers replication over TLS and this node has none: with tls.optional on the peer (a change of [tls] under way), the link runs without TLS; without it, not at all", "op", "replication")
		}
	}
}

// rateLimited logs errors of one kind at most once a second, with how many
// were suppressed: a broken link must not flood the journal.
func rateLimited(log *slog.Logger, what string) func(error) {
	var mu sync.Mutex
	var last time.Time
	var suppressed int
	return func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) < time.Second {
			suppressed++
			return
		}
		log.Warn(what+" error", "op", what, "err", err, "suppressed", suppressed)
		last, suppressed = time.Now(), 0
	}
}
