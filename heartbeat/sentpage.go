package heartbeat

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SentPage is a page of memory the agent shares with its heartbeat core,
// in which the core writes when it last sent its frames (Mono). The agent
// reads it at each tick, with no message and no wake-up of either: a core
// that sends nothing (stopped by SIGSTOP or a debugger, or stuck) leaves
// its node silent to the peer, which takes over, while the agent, alive,
// went on renewing the VIPs: two holders for as long as the core stayed
// stopped. The core proves itself to the agent as the agent proves
// itself to the core with its lease, the other way round.
type SentPage struct {
	f   *os.File
	mem []byte
}

// NewSentPage makes the page, for the agent to give its core (File).
func NewSentPage() (*SentPage, error) {
	fd, err := unix.MemfdCreate("hapaird-core-sent", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("heartbeat: shared page: %w", err)
	}
	f := os.NewFile(uintptr(fd), "hapaird-core-sent")
	if err := unix.Ftruncate(fd, 16); err != nil {
		f.Close()
		return nil, fmt.Errorf("heartbeat: shared page: %w", err)
	}
	return OpenSentPage(f)
}

// OpenSentPage maps the page in f: the core's side, f inherited.
func OpenSentPage(f *os.File) (*SentPage, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, 16, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("heartbeat: shared page: %w", err)
	}
	return &SentPage{f: f, mem: mem}, nil
}

// Close unmaps the page and closes its file.
func (p *SentPage) Close() error {
	unix.Munmap(p.mem)
	return p.f.Close()
}

// File is the page's file, for the core to inherit.
func (p *SentPage) File() *os.File { return p.f }

// word is one of the page's two: 0, the core's epoch as a Mono reading;
// 1, when it last sent, as its loop's own reading (Endpoint.mono), which
// costs no system call where Mono costs one per frame. Mapped at a page's
// start, so aligned.
func (p *SentPage) word(i int) *atomic.Int64 { return (*atomic.Int64)(unsafe.Pointer(&p.mem[8*i])) }

// Ago says how long ago the core last sent, false before its first send.
func (p *SentPage) Ago() (time.Duration, bool) {
	base, t := p.word(0).Load(), p.word(1).Load()
	if t == 0 {
		return 0, false
	}
	return time.Duration(Mono() - base - t), true
}
