package node

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/hapair/hapair/internal/control"
)

// The answer to a connection refused for a full socket is an HTTP 503 whose
// JSON body names the socket, whatever characters its path holds.
func TestTooManyIsAnHTTPAnswerThatSaysWhy(t *testing.T) {
	path := `/run/odd "dir"\x/hapair.sock`
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(tooMany(1024, path))), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e control.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, body: %v", resp.StatusCode, err)
	}
	if !strings.HasPrefix(e.Error, "1024 connections open on "+path+",") {
		t.Errorf("error %q does not name the socket", e.Error)
	}
}
