//go:build bench

package bench

import (
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// delayLine is a TCP proxy that delivers every byte a fixed time after it
// arrived, in each direction, the way a network link of that latency does:
// a same-zone ElastiCache node is about 0.5 ms of round trip away.
//
// Each direction has a reader that stamps what it reads with its due time
// and a writer that delivers each chunk at its due time. Bytes that arrive
// while earlier ones wait are not delayed further, so the link keeps its
// bandwidth. The writer waits with nanosleep(2) on its own thread: Go's
// timers wake through the network poller, whose timeout has millisecond
// resolution, which made a 0.25 ms wait about 1.2 ms. The round trip
// actually obtained is measured and reported with the results.
type delayLine struct {
	ln     net.Listener
	target string
	oneWay time.Duration

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newDelayLine(t *testing.T, target string, oneWay time.Duration) *delayLine {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &delayLine{ln: ln, target: target, oneWay: oneWay}
	d.wg.Add(1)
	go d.serve()
	t.Cleanup(d.close)
	return d
}

func (d *delayLine) Addr() string { return d.ln.Addr().String() }

func (d *delayLine) serve() {
	defer d.wg.Done()
	for {
		c, err := d.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", d.target)
		if err != nil {
			c.Close()
			continue
		}
		for _, x := range []net.Conn{c, u} {
			x.(*net.TCPConn).SetNoDelay(true)
		}
		d.mu.Lock()
		d.conns = append(d.conns, c, u)
		d.mu.Unlock()
		d.wg.Add(2)
		go d.direction(c, u)
		go d.direction(u, c)
	}
}

type chunk struct {
	b   []byte
	due time.Time
}

func (d *delayLine) direction(src, dst net.Conn) {
	defer d.wg.Done()
	ch := make(chan chunk, 1<<14)
	go func() {
		defer close(ch)
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{append([]byte(nil), buf[:n]...), time.Now().Add(d.oneWay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		if wait := time.Until(c.due); wait > 0 {
			sleepPrecisely(wait)
		}
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	// The source closed (or the destination failed): pass the close on.
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	for range ch {
	}
}

func (d *delayLine) close() {
	d.ln.Close()
	d.mu.Lock()
	for _, c := range d.conns {
		c.Close()
	}
	d.mu.Unlock()
	d.wg.Wait()
}

// sleepPrecisely blocks the calling thread for d: it sleeps in the kernel
// until shortly before, as a thread's wake-up comes late by the timer slack
// (50 µs) plus scheduling, and spins for the rest.
func sleepPrecisely(d time.Duration) {
	const spin = 100 * time.Microsecond
	due := time.Now().Add(d)
	if d > spin {
		ts := syscall.NsecToTimespec(int64(d - spin))
		for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
		}
	}
	for time.Now().Before(due) {
	}
}
