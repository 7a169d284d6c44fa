package heartbeat

import (
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A relief sender sends the loop's frame when the loop is late. The loop's
// tick is a timer on one CPU and the loop runs on one thread: when that
// CPU is kept from running (a hypervisor that preempts the vCPU, a kernel
// section that does not yield), nothing else sends, however high the
// core's priority. On the 2-vCPU machine the bench runs on, a thread
// pinned to each CPU woke more than 5 ms late 54 and 61 times in two
// minutes of load, both at once only 17 times: most of turbo's stalls,
// and the false failovers they caused, were one CPU's. So a thread pinned
// to each of two CPUs, each on a timer of its own armed there, wakes every
// quarter of a dead interval and, if no frame has left for that long,
// sends one: a single CPU that stops no longer stops the frames.
//
// It sends only what the loop would have, under the lock the loop holds
// whenever it runs (sendMu): when the loop is not parked waiting, it is
// busy or stuck inside, and then the relief does not send (a loop stuck
// in its work must not be covered up). Nor does it cover a loop that has
// not run for reliefFor: a core whose loop no longer runs must fall
// silent, so the peer takes over.

// ReliefUpTo is the longest dead interval the heartbeat core runs relief
// senders for: turbo's. Its 5 ms is far within the stalls one CPU showed
// under the load campaign (dozens a minute, up to 20 ms), and they made
// its false failovers; fast's 27 ms is above nearly all of them (one or
// two stalls a campaign, none a failover), and the default's 300 ms above
// all: those need not pay two more wake-ups every quarter dead interval
// (fast's idle cost is a target of its own).
const ReliefUpTo = 10 * time.Millisecond

// ReliefCPUs is how many CPUs relief senders run on: two cover any one
// CPU that stops.
const ReliefCPUs = 2

// reliefFor bounds, in dead intervals, how long the relief senders cover
// a loop that does not run: longer than the longest single-CPU stall
// measured (20 ms, four of turbo's dead intervals).
const reliefFor = 8

// reliefCPUs picks the CPUs relief senders run on: the last two this
// process may run on (CPU 0 takes most of a machine's housekeeping); none
// on a single CPU, where a relief stops with the loop.
func reliefCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil
	}
	var cpus []int
	for cpu := len(set)*64 - 1; cpu >= 0 && len(cpus) < ReliefCPUs; cpu-- {
		if set.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	if len(cpus) < 2 {
		return nil
	}
	return cpus
}

// startRelief starts a relief sender on each of cpus, each counted in wg
// until it ends (when stop is closed), and none left uncounted when one
// cannot start.
func (e *Endpoint) startRelief(cpus []int, stop <-chan struct{}, wg *sync.WaitGroup) error {
	for _, cpu := range cpus {
		// A blocking timerfd read by a thread of its own: woken on its
		// own CPU, not through the runtime's poller, which another
		// thread, perhaps on the CPU that stopped, may be running.
		fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
		if err != nil {
			return os.NewSyscallError("timerfd_create", err)
		}
		started := make(chan error)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer unix.Close(fd)
			e.relieve(cpu, fd, stop, started)
		}()
		if err := <-started; err != nil {
			return err
		}
	}
	return nil
}

// relieve is one relief sender, on cpu, woken by timerfd fd.
func (e *Endpoint) relieve(cpu, fd int, stop <-chan struct{}, started chan<- error) {
	// The thread ends with the goroutine (never unlocked), its pinning
	// and scheduling with it.
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		started <- os.NewSyscallError("sched_setaffinity", err)
		return
	}
	every := e.cfg.Dead / 4
	// Armed from the pinned thread: the timer is this CPU's.
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(every)), Interval: unix.NsecToTimespec(int64(every))}
	if _, errno := sysRaw(unix.SYS_TIMERFD_SETTIME, uintptr(fd), 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0); errno != 0 {
		started <- sysErr("timerfd_settime", errno)
		return
	}
	close(started)
	buf := make([]byte, 0, FrameLen)
	var b [8]byte
	for {
		// A system call the runtime knows blocks, so the thread gives
		// up its P while it waits.
		if _, err := unix.Read(fd, b[:]); err != nil && err != unix.EINTR {
			return
		}
		select {
		case <-stop:
			return
		default:
		}
		now := e.mono()
		if !e.reliefDue(now, every) || now-e.ranAt.Load() > int64(reliefFor*e.cfg.Dead) {
			continue
		}
		if !e.sendMu.TryLock() {
			continue
		}
		// Another relief may have sent meanwhile.
		if e.reliefDue(e.mono(), every) {
			e.sendAll(buf, e.deaf, true)
			e.relievedLast.Store(true)
			e.stats.relieved.Add(1)
		}
		e.sendMu.Unlock()
	}
}

// reliefDue says whether a relief sender woken every every should send at
// now: when no frame left for every; once a relief sent the last one, for
// three quarters of it. Else a relief woken a little early after its own
// frame finds it too fresh and skips the wake-up: frames left 2.5 ms apart
// at turbo, half the dead interval.
func (e *Endpoint) reliefDue(now int64, every time.Duration) bool {
	age := now - e.sentAt.Load()
	return age >= int64(every) || e.relievedLast.Load() && age >= int64(every)*3/4
}

// mono is the monotonic clock as nanoseconds since the endpoint was made.
func (e *Endpoint) mono() int64 { return int64(time.Since(e.epoch)) }
