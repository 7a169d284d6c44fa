package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hapair/hapair/internal/control"
)

func page(t *testing.T, s control.Status) string {
	t.Helper()
	rec := httptest.NewRecorder()
	Handler(func() control.Status { return s }).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, err := io.ReadAll(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// An alert on another host answering for a VIP names the VIP: each VIP
// held has its series, 0 while nobody else answers, and a sighting kept
// after the VIP was let go still shows.
func TestVIPConflictsByVIP(t *testing.T) {
	s := control.Status{
		Role:    "ACTIVE",
		Holding: []string{"192.0.2.100/24 on eth0", "2001:db8::100/64 on eth0", "192.0.2.101/24 on eth0"},
		VIPConflicts: []control.VIPConflict{
			{VIP: "192.0.2.101", Interface: "eth0", MAC: "02:00:00:00:00:01", Since: time.Now()},
			{VIP: "192.0.2.101", Interface: "eth0", MAC: "02:00:00:00:00:02", Since: time.Now()},
			{VIP: "192.0.2.102", Interface: "eth0", MAC: "02:00:00:00:00:03", Since: time.Now()},
		},
	}
	body := page(t, s)
	for _, want := range []string{
		`hapair_vip_conflicts{vip="192.0.2.100"} 0`,
		`hapair_vip_conflicts{vip="2001:db8::100"} 0`,
		`hapair_vip_conflicts{vip="192.0.2.101"} 2`,
		`hapair_vip_conflicts{vip="192.0.2.102"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	// A standby holds nothing and names nobody: no series.
	if body := page(t, control.Status{Role: "STANDBY"}); strings.Contains(body, "hapair_vip_conflicts{") {
		t.Errorf("a standby's metrics have a conflict series:\n%s", body)
	}
}
