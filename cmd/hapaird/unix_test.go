package main

import (
	"context"
	"io"
	"net"
)

type netConn = net.Conn

func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", path)
}

func bufCopy(w io.Writer, r io.Reader) { io.Copy(w, r) }
