package heartbeat

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockIO reads a path's socket with recvmsg, and writes the raw path's
// with sendto, on buffers set up once: nothing on the hot path allocates
// (net.PacketConn's ReadFrom and the packet library's WriteTo make an
// address per frame), and every frame read carries the time the kernel
// received it (SO_TIMESTAMPNS). That time, not the moment a reader got
// to run, is what liveness counts from: frames that waited in the socket
// while the core was held up prove the peer was alive when they came.
//
// A direct socket (see below) is taken from its conn: sockIO owns it as fd,
// which is never itself in the runtime's poller. The poller sees
// descriptors edge-triggered, so a datagram wakes its thread whether or
// not any goroutine waits to read, and a socket in it costs a wake-up per
// frame. To wait for frames, watch puts a duplicate in the poller for a
// reader; unwatch closes the duplicate, after which frames wait in the
// socket, unnoticed, until poll reads them.
type sockIO struct {
	fd int // the socket, owned; -1: not taken (raw is the conn's)
	// f is the watched duplicate of fd, raw its (or the conn's) RawConn.
	f   *os.File
	raw syscall.RawConn
	// link: a packet socket, whose sender address (the peer's MAC) is
	// read, and whose sends name the peer.
	link bool
	// direct: writeTo can send, for a packet socket or a socket
	// connected to the peer (the UDP path); others are written through
	// their conn, which names the destination.
	direct bool

	// last is when the frame read before arrived, on this socket.
	last time.Time

	msg    unix.Msghdr
	iov    unix.Iovec
	name   unix.RawSockaddrLinklayer
	oob    [128]byte
	buf    [FrameLen + 1]byte // one spare byte tells an over-long frame
	n      int
	stamp  int64 // kernel receive time, Unix ns; 0: none
	rerr   error
	recvFn func(uintptr) bool

	dst    unix.RawSockaddrLinklayer
	out    []byte
	werr   error
	sendFn func(uintptr) bool
}

// newSockIO sets up c's socket, or returns nil for a connection that is no
// socket (the tests' in-memory links), which is then read and written
// through its own methods. ifindex and etherType describe a packet
// socket's link (0 for others).
func newSockIO(c net.PacketConn, ifindex int, etherType uint16) *sockIO {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &sockIO{fd: -1, raw: raw, link: ifindex > 0}
	// Without the option frames still arrive, timed when read.
	var dupErr error
	raw.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
		_, err := unix.Getpeername(int(fd))
		s.direct = s.link || err == nil
		if s.direct {
			s.fd, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
		}
	})
	if dupErr != nil {
		s.fd = -1
	} else if s.fd >= 0 {
		// Closing the conn takes its descriptor out of the poller; the
		// socket lives on as fd.
		c.Close()
		s.raw = nil
	}
	s.recvFn, s.sendFn = s.recv, s.send
	s.dst = unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Protocol: htons(etherType), Ifindex: int32(ifindex), Halen: 6}
	return s
}

// owned says the socket was taken from its conn: it can be polled.
func (s *sockIO) owned() bool { return s.fd >= 0 }

// watch puts a duplicate of the socket in the runtime's poller for a
// reader to wait on (read); a socket not taken stays watched as it was.
func (s *sockIO) watch() error {
	if s.fd < 0 || s.f != nil {
		return nil
	}
	d, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("fcntl", err)
	}
	// Non-blocking, as fd is: os.NewFile puts it in the poller.
	f := os.NewFile(uintptr(d), "heartbeat socket")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	s.f, s.raw = f, raw
	return nil
}

// unwatch takes the socket out of the poller: a reader waiting on it gets
// an error (the duplicate is closing, which os.File's RawConn does not
// say as os.ErrClosed, hence Endpoint's stop). The caller waits for the
// reader to end before it polls.
func (s *sockIO) unwatch() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// close closes the socket, once it is no longer watched or polled.
func (s *sockIO) close() {
	s.unwatch()
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

// poll reads one frame the socket holds into b, as read does, without
// waiting: ok is false when it holds none.
func (s *sockIO) poll(b []byte) (ok bool, n int, at time.Time, mac [6]byte, err error) {
	if !s.recv(uintptr(s.fd)) {
		return false, 0, time.Time{}, mac, nil
	}
	if s.rerr != nil {
		return true, 0, time.Time{}, mac, s.rerr
	}
	n = copy(b, s.buf[:s.n])
	copy(mac[:], s.name.Addr[:6])
	s.last = arrival(time.Now(), s.stamp, s.last)
	return true, n, s.last, mac, nil
}

// inQueue is how many bytes the socket holds unread (SIOCINQ).
func (s *sockIO) inQueue() int {
	n := 0
	if s.fd >= 0 {
		n, _ = unix.IoctlGetInt(s.fd, unix.SIOCINQ)
		return n
	}
	s.raw.Control(func(fd uintptr) {
		n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	return n
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// read waits for the next frame, copies it into b and returns its length,
// the kernel's receive time (now if the kernel gave none) and, on a packet
// socket, the sender's MAC.
func (s *sockIO) read(b []byte) (n int, at time.Time, mac [6]byte, err error) {
	if err := s.raw.Read(s.recvFn); err != nil {
		return 0, time.Time{}, mac, err
	}
	if s.rerr != nil {
		return 0, time.Time{}, mac, s.rerr
	}
	n = copy(b, s.buf[:s.n])
	copy(mac[:], s.name.Addr[:6])
	s.last = arrival(time.Now(), s.stamp, s.last)
	return n, s.last, mac, nil
}

// recv is one non-blocking recvmsg; false asks the poller to wait.
func (s *sockIO) recv(fd uintptr) bool {
	s.iov.Base = &s.buf[0]
	s.iov.SetLen(len(s.buf))
	s.msg.Iov = &s.iov
	s.msg.SetIovlen(1)
	s.msg.Control = &s.oob[0]
	s.msg.SetControllen(len(s.oob))
	s.msg.Name, s.msg.Namelen = nil, 0
	if s.link {
		s.msg.Name = (*byte)(unsafe.Pointer(&s.name))
		s.msg.Namelen = uint32(unsafe.Sizeof(s.name))
	}
	n, errno := sysRaw(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&s.msg)), unix.MSG_DONTWAIT, 0, 0, 0)
	if errno == unix.EAGAIN {
		return false
	}
	s.n, s.rerr, s.stamp = 0, sysErr("recvmsg", errno), 0
	if errno == 0 {
		s.n, s.stamp = int(n), rxStamp(s.oob[:s.msg.Controllen])
	}
	return true
}

// sysRaw makes a system call that cannot block (its descriptor is
// non-blocking, or it says MSG_DONTWAIT) as a raw one, again on EINTR.
//
// Why raw: a call made through syscall.Syscall tells the runtime it may
// block, and when the runtime's monitor thread (sysmon) is in its deep
// sleep, as it is whenever the process was idle, that call wakes it; it
// then polls every 20 µs until the process is idle again. The heartbeat
// core wakes up to three thousand times a second at turbo and made a few
// calls at each: perf found a fifth of its time in the monitor's
// wake-ups, on a VM where a context switch is dear.
func sysRaw(trap, a1, a2, a3, a4, a5, a6 uintptr) (uintptr, unix.Errno) {
	for {
		r, _, errno := unix.RawSyscall6(trap, a1, a2, a3, a4, a5, a6)
		if errno != unix.EINTR {
			return r, errno
		}
	}
}

// sysErr is errno as an error naming the call; nil for none.
func sysErr(call string, errno unix.Errno) error {
	if errno == 0 {
		return nil
	}
	return os.NewSyscallError(call, errno)
}

// rxStamp finds SCM_TIMESTAMPNS among control messages; 0 if absent.
func rxStamp(oob []byte) int64 {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && l >= unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))) {
			return (*unix.Timespec)(unsafe.Pointer(&oob[unix.CmsgLen(0)])).Nano()
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return 0
}

// kernelTime turns a kernel receive time (wall clock) into a monotonic
// instant: now less the frame's age. An age that makes no sense (the wall
// clock stepped between receipt and now) falls back to now.
func kernelTime(now time.Time, stamp int64) time.Time {
	if stamp == 0 {
		return now
	}
	age := time.Duration(now.UnixNano() - stamp)
	if age < 0 || age > 10*time.Second {
		return now
	}
	return now.Add(-age)
}

// arrival is when a frame the kernel stamped at stamp arrived, read at
// now, and no earlier than prev, the arrival of the frame before it on the
// same socket. A wall clock stepped forward between the stamp and the read
// (chrony's makestep at boot, an operator's date -s) ages the frame by the
// step in kernelTime; taken as it is, the last frame a path brought would
// seem older than the dead interval and the path would be declared silent
// at once, a false failover when the step caught both paths' frames
// unread. A socket queues frames in order, so no frame arrived before the
// one read ahead of it: the step costs the path at most the time since
// that one, which the dead interval allows for.
func arrival(now time.Time, stamp int64, prev time.Time) time.Time {
	if at := kernelTime(now, stamp); at.After(prev) {
		return at
	}
	return prev
}

// setPeer names the raw path's destination: mac on the link.
func (s *sockIO) setPeer(mac net.HardwareAddr) {
	copy(s.dst.Addr[:], mac)
}

// writeTo sends b to the peer: the one set by setPeer on a packet socket,
// the connected one otherwise.
//
// An owned socket is written directly, never waited on: a send buffer
// full of heartbeats means a link that does not drain, and the loop that
// judges liveness must not wait for it (the frame is counted as not sent).
func (s *sockIO) writeTo(b []byte) error {
	s.out = b
	if s.fd >= 0 {
		if !s.send(uintptr(s.fd)) {
			return os.NewSyscallError("sendto", unix.EAGAIN)
		}
		return s.werr
	}
	if err := s.raw.Write(s.sendFn); err != nil {
		return err
	}
	return s.werr
}

// send is one non-blocking sendto: to the peer's MAC on a packet socket,
// to the connected peer on the UDP path.
func (s *sockIO) send(fd uintptr) bool {
	var to, toLen uintptr
	if s.link {
		to, toLen = uintptr(unsafe.Pointer(&s.dst)), unsafe.Sizeof(s.dst)
	}
	_, errno := sysRaw(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&s.out[0])), uintptr(len(s.out)), unix.MSG_DONTWAIT, to, toLen)
	if errno == unix.EAGAIN {
		return false
	}
	s.werr = sysErr("sendto", errno)
	return true
}

// fdTimer is a kernel timer (timerfd, CLOCK_MONOTONIC) waited on through
// the runtime's poller. Go's own timers sleep in epoll_wait, whose timeout
// is in milliseconds (rounded down, then 1 ms for what is left), so a
// 5 ms dead interval fired up to a millisecond late and a 1 ms ticker
// ticked every one to two; a timerfd wakes the poller when it expires.
type fdTimer struct {
	fd int
	rc *rawConn
	C  chan struct{}
}

func newFDTimer() (*fdTimer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("timerfd_create", err)
	}
	rc, err := newRawConn(os.NewFile(uintptr(fd), "timerfd"))
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	t := &fdTimer{fd: fd, rc: rc, C: make(chan struct{}, 1)}
	go t.run()
	return t, nil
}

// run delivers expiries to C, several at once as one: a receiver acts on
// the present, not on each expiry it missed.
func (t *fdTimer) run() {
	var b [8]byte
	for {
		if _, err := t.rc.Read(b[:]); err != nil {
			return
		}
		select {
		case t.C <- struct{}{}:
		default:
		}
	}
}

// Reset arms the timer d from now, then every period (0: once). An expiry
// of the old setting may still be in C; receivers recheck what is due.
func (t *fdTimer) Reset(d, period time.Duration) {
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(max(d, time.Nanosecond))), Interval: unix.NsecToTimespec(int64(period))}
	sysRaw(unix.SYS_TIMERFD_SETTIME, uintptr(t.fd), 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0)
}

// Close stops the timer and its reader.
func (t *fdTimer) Close() { t.rc.Close() }

// rawConn reads and writes a non-blocking descriptor (the core's socket to
// its agent, a timerfd) through the runtime's poller with raw system calls
// (sysRaw), without allocating. A read of 0 bytes is the end (the peer
// closed a SEQPACKET socket). Writes may come from several goroutines.
type rawConn struct {
	c  io.Closer
	rc syscall.RawConn

	rb     []byte
	rn     int
	rerr   unix.Errno
	readFn func(uintptr) bool

	wmu     sync.Mutex
	wb      []byte
	werr    unix.Errno
	writeFn func(uintptr) bool
}

func newRawConn(c interface {
	syscall.Conn
	io.Closer
}) (*rawConn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &rawConn{c: c, rc: rc}
	r.readFn, r.writeFn = r.read, r.write
	return r, nil
}

func (r *rawConn) read(fd uintptr) bool {
	n, errno := sysRaw(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.rb))), uintptr(len(r.rb)), 0, 0, 0)
	r.rn, r.rerr = 0, errno
	if errno == 0 {
		r.rn = int(n)
	}
	return errno != unix.EAGAIN
}

func (r *rawConn) write(fd uintptr) bool {
	_, errno := sysRaw(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.wb))), uintptr(len(r.wb)), 0, 0, 0)
	r.werr = errno
	return errno != unix.EAGAIN
}

// Read reads one message (a datagram, a timer's count) into b.
func (r *rawConn) Read(b []byte) (int, error) {
	r.rb = b
	if err := r.rc.Read(r.readFn); err != nil {
		return 0, err
	}
	if r.rerr != 0 {
		return 0, sysErr("read", r.rerr)
	}
	return r.rn, nil
}

// Write sends b as one message.
func (r *rawConn) Write(b []byte) (int, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.wb = b
	if err := r.rc.Write(r.writeFn); err != nil {
		return 0, err
	}
	if r.werr != 0 {
		return 0, sysErr("write", r.werr)
	}
	return len(b), nil
}

// Close closes the descriptor; a Read or Write waiting on it returns.
func (r *rawConn) Close() error { return r.c.Close() }
