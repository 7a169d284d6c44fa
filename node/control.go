package node

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"sync"
	"time"
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
	n.server(&http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10}, limited)
	return limited, nil
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
