package testenv

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// clusterMasters is the number of masters of the test cluster: enough for
// views to land on different nodes, as in a real deployment.
const clusterMasters = 3

var cluster struct {
	once  sync.Once
	addrs []string
	err   error
}

// RedisCluster returns the addresses (127.0.0.1:PORT) of the masters of a
// Redis Cluster without replicas, shared by all tests of this test binary
// and started on first use. Any of them is a seed for a cluster client.
// Tests sharing it should use distinct keys.
func RedisCluster(tb testing.TB) []string {
	tb.Helper()
	Needs(tb, "redis-server (cluster mode)")
	cluster.once.Do(func() { cluster.addrs, cluster.err = startCluster() })
	if cluster.err != nil {
		tb.Fatalf("testenv: %v", cluster.err)
	}
	return cluster.addrs
}

func startCluster() ([]string, error) {
	dir, err := os.MkdirTemp("", "testenv-redis-cluster-")
	if err != nil {
		return nil, err
	}
	shared.mu.Lock()
	shared.dirs = append(shared.dirs, dir)
	shared.mu.Unlock()
	// Each node needs a client port and a cluster bus port. The bus port
	// defaults to the client port + 10000, which may not exist above 55535.
	ports, err := freePorts(2 * clusterMasters)
	if err != nil {
		return nil, err
	}
	addrs := make([]string, clusterMasters)
	for i := range addrs {
		port, bus := ports[2*i], ports[2*i+1]
		nodeDir := filepath.Join(dir, strconv.Itoa(port))
		if err := os.Mkdir(nodeDir, 0o755); err != nil {
			return nil, err
		}
		p, err := startProc("redis-cluster", nodeDir, port,
			"redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
			"--cluster-config-file", "nodes.conf",
			"--save", "", "--appendonly", "no", "--dir", nodeDir)
		if err != nil {
			return nil, err
		}
		register(p)
		addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := p.waitReady(redisStartTimeout, func() bool { return ping(addrs[i]) == nil }); err != nil {
			return nil, err
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), redisStartTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create %s: %v\n%s", strings.Join(addrs, " "), err, out)
	}

	// redis-cli returns once the nodes have met; each node reports the
	// cluster ok only when it knows an owner for every slot.
	deadline := time.Now().Add(redisStartTimeout)
	for _, a := range addrs {
		for {
			info, err := redisCommand(a, "CLUSTER INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", clusterMasters)) {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("redis cluster node %s not ok within %v: %v\n%s", a, redisStartTimeout, err, info)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return addrs, nil
}

// freePorts returns n distinct unused ports: the listeners stay open until
// all are chosen, so the kernel cannot hand out one port twice.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// redisCommand sends one inline command and returns its reply as text: a
// status, an integer, or a bulk string. An error reply is an error.
func redisCommand(addr, cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return roundTrip(c, cmd)
}

func roundTrip(c net.Conn, cmd string) (string, error) {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, cmd+"\r\n"); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch {
	case line == "":
		return "", fmt.Errorf("%s: empty reply", cmd)
	case line[0] == '-':
		return "", fmt.Errorf("%s: %s", cmd, line[1:])
	case line[0] == '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("%s: reply %q", cmd, line)
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return "", err
		}
		return string(b[:n]), nil
	default:
		return line[1:], nil
	}
}
