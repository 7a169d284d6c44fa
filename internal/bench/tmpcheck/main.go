package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hapair/hapair/internal/labnet"
	"github.com/hapair/hapair/statesync"
	"github.com/hapair/hapair/statesync/client"
)

func main() {
	bin := os.Args[1]
	p, err := labnet.New(labnet.Options{})
	if err != nil {
		panic(err)
	}
	defer p.Close()
	dir, _ := os.MkdirTemp("", "chk")
	defer os.RemoveAll(dir)
	c, err := p.NewCluster(bin, dir, labnet.ConfigOptions{SyncMode: os.Getenv("MODE"), Extra: os.Getenv("EXTRA")})
	if err != nil {
		panic(err)
	}
	act, err := c.Settle(10 * time.Second)
	if err != nil {
		panic(err)
	}
	c.WaitSynced(act, 10*time.Second)
	st, _ := client.New(c.Socket(act)).Stream(context.Background())
	payload := []byte(strings.Repeat("x", 256))
	st.Do(statesync.OpCreate, "lat", payload)
	var lat []time.Duration
	n, _ := strconv.Atoi(os.Getenv("N"))
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if _, err := st.Do(statesync.OpUpdate, "lat", payload); err != nil {
			panic(err)
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	s, _ := c.Status(act)
	fmt.Printf("p50 %v p90 %v p95 %v p99 %v sync %+v\n", lat[len(lat)/2], lat[len(lat)*90/100], lat[len(lat)*95/100], lat[len(lat)*99/100], s.Sync)
	h := map[int]int{}
	for _, l := range lat {
		h[int(l/(10*time.Microsecond))]++
	}
	for b := 0; b < 30; b++ {
		fmt.Printf("%3d-%3dus %6d\n", b*10, b*10+10, h[b])
	}
	if os.Getenv("DBG") != "" {
		for _, n := range []string{"a", "b"} {
			b, _ := os.ReadFile(c.LogPath(n))
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "DBG") {
					fmt.Println(n, l)
				}
			}
		}
	}
}
